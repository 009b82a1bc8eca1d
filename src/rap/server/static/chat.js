// Chat: a photo (optional), a question, an answer streamed as it is generated,
// and beside it the concepts that were retrieved, with their boxes on the photo.

import { ApiError, events, explain, getJSON, request } from "./api.js";
import { concepts, dropTarget } from "./concepts.js";
import { showImage } from "./images.js";
import { $ } from "./ui.js";

const COLORS = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];

let photo = null; // the File being asked about
let running = null; // AbortController of the call in flight

// -- the photo -------------------------------------------------------------------------

function setPhoto(file) {
  photo = file;
  const img = $("#chat-image");
  if (img.src) URL.revokeObjectURL(img.src);
  clearBoxes();
  $("#chat-figure").hidden = !file;
  $("#chat-drop").hidden = !!file;
  if (file) {
    img.src = URL.createObjectURL(file);
    $("#chat-photo-name").textContent = file.name;
  } else {
    img.removeAttribute("src");
    $("#chat-photo").value = "";
  }
  updateTools();
}

function clearBoxes() {
  $("#chat-boxes").replaceChildren();
}

/** Outline each retrieved concept's box on the photo, in its colour. */
function drawBoxes(found) {
  const img = $("#chat-image");
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  clearBoxes();
  if (!width || !height) return;
  const boxes = found.filter((r) => r.box).map((r, n) => {
    const [x0, y0, x1, y1] = r.box;
    const box = document.createElement("div");
    box.className = "box";
    box.style.setProperty("--c", r.color || COLORS[n % COLORS.length]);
    Object.assign(box.style, {
      left: `${(100 * x0) / width}%`,
      top: `${(100 * y0) / height}%`,
      width: `${(100 * (x1 - x0)) / width}%`,
      height: `${(100 * (y1 - y0)) / height}%`,
    });
    const label = document.createElement("span");
    label.textContent = r.name;
    box.append(label);
    return box;
  });
  $("#chat-boxes").replaceChildren(...boxes);
}

// -- the conversation -------------------------------------------------------------------

function addTurn(role, text, note) {
  const item = document.createElement("li");
  item.className = `turn ${role}`;
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  item.append(body);
  if (note) {
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = note;
    item.append(meta);
  }
  $("#chat-log").append(item);
  follow(true);
  return item;
}

/** Keep the newest words in view while they arrive, unless the reader scrolled up. */
function follow(force = false) {
  const log = $("#chat-log");
  if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 80) log.scrollTop = log.scrollHeight;
}

function describe(r) {
  const named = r.via === "text" || r.via === "name";
  const parts = [named ? "named in the question" : r.match === false ? "weak match, probably not here" : `matched by ${r.space || r.via}`];
  if (named && r.match) parts.push(`matched by ${r.space}`);
  if (r.distance != null) parts.push(`distance ${Number(r.distance).toFixed(3)}`);
  return parts.join(" · ");
}

/** The "why": which concepts the answer used, each with thumbnail, reason and colour. */
function showUsed(turn, found) {
  const coloured = found.map((r, n) => ({ ...r, color: COLORS[n % COLORS.length] }));
  const list = document.createElement("ul");
  list.className = "used";
  list.setAttribute("aria-label", "Concepts used");
  if (!coloured.length) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "None of your concepts were found.";
    list.append(none);
  }
  for (const r of coloured) {
    const chip = document.createElement("li");
    chip.className = "chip";
    chip.style.setProperty("--c", r.color);
    const img = document.createElement("img");
    img.alt = "";
    const concept = concepts.find(r.name);
    if (concept) showImage(img, concept.name, concept.images[0]);
    const name = document.createElement("strong");
    name.textContent = r.name;
    const why = document.createElement("span");
    why.className = "why";
    why.textContent = describe(r);
    const words = document.createElement("span");
    words.append(name, why);
    chip.append(img, words);
    list.append(chip);
  }
  turn.append(list);
  follow(true);
  if (photo) drawBoxes(coloured);
}

// -- calls ----------------------------------------------------------------------------

function updateTools() {
  const busy = running !== null;
  const name = $("#tool-concept").value;
  $("#caption").disabled = busy || !photo;
  $("#recognize").disabled = busy || !photo || !name;
  $("#locate").disabled = busy || !photo || !name;
  $("#tool-concept").disabled = busy || !concepts.list.length;
  const why = busy ? "Wait for the answer in progress" : !photo ? "Choose a photo first" : !name ? "Add a concept first" : "";
  for (const id of ["#caption", "#recognize", "#locate"]) $(id).title = $(id).disabled ? why : "";
  $("#recognize").textContent = name ? `Is ${name} here?` : "Is it here?";
  $("#locate").textContent = name ? `Where is ${name}?` : "Where is it?";
  const ask = $("#ask");
  ask.textContent = busy ? "Stop" : "Ask";
  ask.classList.toggle("danger", busy);
  $("#chat-photo-remove").disabled = busy;
}

function form(fields) {
  const body = new FormData();
  if (photo) body.append("image", photo, photo.name);
  for (const [key, value] of Object.entries(fields)) body.set(key, value);
  return body;
}

/**
 * Run one call; whatever happens, the controls come back and errors are said
 * plainly. A question that failed goes back into the box, ready to resend.
 */
async function call(turn, work, question = null) {
  running = new AbortController();
  updateTools();
  try {
    await work(running.signal);
  } catch (err) {
    const text = turn.querySelector(".text");
    text.classList.remove("streaming");
    if (err.name === "AbortError") {
      turn.classList.add("stopped");
      text.textContent += text.textContent ? " (stopped)" : "(stopped)";
    } else {
      turn.classList.add("failed");
      text.textContent = explain(err, "photo");
      if (question && !$("#question").value) $("#question").value = question;
    }
  } finally {
    running = null;
    updateTools();
  }
}

/**
 * Stream an answer: `token` events ({text}) as they come, then one `done`
 * event with the whole answer and the concepts it used, or an `error` event.
 */
async function stream(path, fields, turn, signal) {
  const text = turn.querySelector(".text");
  text.classList.add("streaming");
  const response = await request(path, { method: "POST", form: form({ ...fields, stream: "true" }), signal });
  for await (const { event, data } of events(response)) {
    if (event === "token") {
      text.textContent += data.text;
      follow();
    } else if (event === "done") {
      text.textContent = data.answer;
      text.classList.remove("streaming");
      showUsed(turn, data.concepts);
      return;
    } else if (event === "error") {
      throw new ApiError(502, data.error.code, data.error.message);
    }
  }
  throw new ApiError(502, "stream", "the answer stopped before it was complete");
}

function ask(event) {
  event.preventDefault();
  if (running) return running.abort();
  const question = $("#question").value.trim();
  if (!question) return $("#question").focus();
  addTurn("user", question, photo ? `about ${photo.name}` : null);
  $("#question").value = "";
  const turn = addTurn("assistant", "");
  return call(turn, (signal) => stream("/v1/ask", { question }, turn, signal), question);
}

function caption() {
  addTurn("user", "Caption this photo.", `about ${photo.name}`);
  const turn = addTurn("assistant", "");
  return call(turn, (signal) => stream("/v1/caption", {}, turn, signal));
}

function recognize() {
  const name = $("#tool-concept").value;
  addTurn("user", `Is ${name} in this photo?`, `about ${photo.name}`);
  const turn = addTurn("assistant", "");
  return call(turn, async (signal) => {
    const result = await getJSON("/v1/recognize", { method: "POST", form: form({ name }), signal });
    const verdict =
      result.present === true ? `Yes, ${name} is in this photo.`
      : result.present === false ? `No, ${name} is not in this photo.`
      : `Not sure whether ${name} is here.`;
    turn.querySelector(".text").textContent = result.reply ? `${verdict} The model said: “${result.reply.trim()}”` : verdict;
    showUsed(turn, result.match ? [result.match] : []);
  });
}

function locate() {
  const name = $("#tool-concept").value;
  addTurn("user", `Where is ${name}?`, `about ${photo.name}`);
  const turn = addTurn("assistant", "");
  return call(turn, async (signal) => {
    const result = await getJSON("/v1/locate", { method: "POST", form: form({ name }), signal });
    const text = turn.querySelector(".text");
    if (result.found && result.box) {
      text.textContent = `${name} is in the box drawn on the photo (${result.box.join(", ")}).`;
      showUsed(turn, [{ ...(result.match || { name, via: "image" }), box: result.box }]);
    } else {
      text.textContent = `I could not find ${name} in this photo.`;
      showUsed(turn, []);
    }
  });
}

function fillConcepts() {
  const select = $("#tool-concept");
  const chosen = select.value;
  const options = concepts.list.map((c) => new Option(c.name, c.name, false, c.name === chosen));
  if (!options.length) options.push(new Option("no concepts yet", ""));
  select.replaceChildren(...options);
  updateTools();
}

/** Forget the conversation (new chat, or another user signing in). */
export function resetChat() {
  if (running) running.abort();
  $("#chat-log").replaceChildren();
  setPhoto(null);
}

export function initChat() {
  $("#ask-form").addEventListener("submit", ask);
  $("#question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!running) $("#ask-form").requestSubmit();
    }
  });
  $("#chat-photo").addEventListener("change", (event) => setPhoto(event.target.files[0] || null));
  $("#chat-photo-remove").addEventListener("click", () => {
    setPhoto(null);
    $("#chat-photo").focus();
  });
  $("#chat-clear").addEventListener("click", resetChat);
  dropTarget($("#chat-drop"), (files) => setPhoto(files[0]));
  dropTarget($("#chat-figure"), (files) => setPhoto(files[0]));
  // A photo pasted while in the chat (a screenshot, a copied picture) becomes the photo asked about.
  $("#chat").addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file && !running) {
      event.preventDefault();
      setPhoto(file);
    }
  });
  $("#caption").addEventListener("click", caption);
  $("#recognize").addEventListener("click", recognize);
  $("#locate").addEventListener("click", locate);
  $("#tool-concept").addEventListener("change", updateTools);
  concepts.addEventListener("change", fillConcepts);
  fillConcepts();
}
