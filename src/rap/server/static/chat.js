// Chat: a photo (optional), questions and answers that remember the earlier
// turns, and the evidence (which concepts, where on the photo) shown as soon as
// retrieval returns, before the answer streams in under it.
//
// Each question goes to /v1/chat/completions with the whole chat so far (the
// photo on its first message), as any OpenAI-style client sends it; the chat is
// kept in this browser (saved.js) so a reload brings it back.

import { ApiError, events, explain, getJSON, request } from "./api.js";
import { checkImage } from "./checks.js";
import { concepts, dropTarget, openAdd, upsert } from "./concepts.js";
import { BoxSelector, cropFile } from "./crop.js";
import { conceptPath, showImage } from "./images.js";
import { forgetChat, loadChat, saveChat } from "./saved.js";
import { $, setError, toast } from "./ui.js";

const COLORS = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];

let owner = null; // whose chat this is (the signed-in user), for saving it
let photo = null; // the File the chat is about
let turns = []; // {role, text, note, kind: "chat" | "tool", status: "running" | "done" | "failed" | "stopped", concepts}
let running = null; // AbortController of the call in flight
let selected = null; // the region chosen on the photo: {box, name, category, drawn}
let drawer = null; // the BoxSelector drawing on the chat photo

// -- the photo -------------------------------------------------------------------------

function showPhoto(file) {
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

/** A photo chosen, dropped or pasted: checked first; a new photo starts a new chat. */
async function choosePhoto(file) {
  if (!file || running) return;
  const { error } = await checkImage(file);
  setError($("#chat-photo-error"), error);
  $("#chat-photo").value = "";
  if (error) return;
  newChat();
  showPhoto(file);
  save();
}

function clearBoxes() {
  $("#chat-boxes").replaceChildren();
  unselect();
}

/** Each retrieved concept's box on the photo, in its colour; each is a button that opens the box menu. */
async function drawBoxes(found) {
  const img = $("#chat-image");
  clearBoxes();
  if (!photo || !img.src) return;
  await img.decode().catch(() => {});
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  if (!width || !height) return;
  const boxes = found.filter((r) => r.box).map((r) => {
    const [x0, y0, x1, y1] = r.box;
    const box = document.createElement("button");
    box.type = "button";
    box.className = "box";
    box.style.setProperty("--c", r.color);
    box.setAttribute("aria-label", `The box of ${r.name}: remember it, or say what it is`);
    Object.assign(box.style, {
      left: `${(100 * x0) / width}%`,
      top: `${(100 * y0) / height}%`,
      width: `${(100 * (x1 - x0)) / width}%`,
      height: `${(100 * (y1 - y0)) / height}%`,
    });
    const label = document.createElement("span");
    label.textContent = r.name;
    box.append(label);
    box.addEventListener("click", () => select({ box: r.box, name: r.name, category: r.category, drawn: false }));
    return box;
  });
  // the larger boxes first, so a box inside another stays on top and can be clicked
  const area = (b) => (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]);
  const order = found.filter((r) => r.box).map((r, n) => [area(r), boxes[n]]);
  $("#chat-boxes").replaceChildren(...order.sort((a, b) => b[0] - a[0]).map(([, box]) => box));
}

// -- a region of the photo: remember it, add it to a concept ------------------------------

function select(region) {
  selected = region;
  if (!region.drawn) drawer.clear();
  const [x0, y0, x1, y1] = region.box;
  $("#box-menu-title").textContent = region.name
    ? `The box of <${region.name}> (${x1 - x0} × ${y1 - y0} px):`
    : `Your box (${x1 - x0} × ${y1 - y0} px):`;
  fillThisIs(region.name);
  $("#box-menu").hidden = false;
}

function unselect() {
  selected = null;
  $("#box-menu").hidden = true;
}

function fillThisIs(preferred = null) {
  const select = $("#this-is-name");
  const names = concepts.list.map((c) => c.name);
  const chosen = preferred && names.includes(preferred) ? preferred : select.value || names[0];
  select.replaceChildren(...names.map((n) => new Option(n, n, false, n === chosen)));
  $("#this-is").hidden = select.hidden = !names.length;
  labelThisIs();
}

function labelThisIs() {
  $("#this-is").textContent = `This is ${$("#this-is-name").value}`;
}

function lastAnswer() {
  const done = turns.filter((t) => t.role === "assistant" && t.kind === "chat" && t.status === "done");
  // one line (a description holds no line breaks), within the description's length
  return done.length ? done[done.length - 1].text.replace(/\s+/g, " ").trim().slice(0, 2000) : "";
}

async function rememberAs() {
  if (!selected) return;
  const file = await cropFile(photo, selected.box);
  openAdd({ file, category: selected.name ? concepts.find(selected.name)?.category || "" : "", info: lastAnswer() });
}

async function thisIs() {
  const name = $("#this-is-name").value;
  if (!selected || !name) return;
  try {
    const form = new FormData();
    const file = await cropFile(photo, selected.box);
    form.append("image", file, file.name);
    upsert(await getJSON(`${conceptPath(name)}/images`, { method: "POST", form }));
    toast(`Added the box to ${name}'s reference images: the next answer knows it.`);
    drawer.clear();
    unselect();
  } catch (err) {
    toast(explain(err, "image"));
  }
}

/** "Not bo": this region is not that concept; retrieval will not match it there again. */
async function notThis(r, button) {
  button.disabled = true;
  try {
    const form = new FormData();
    const file = await cropFile(photo, r.box);
    form.append("image", file, file.name);
    await getJSON(`${conceptPath(r.name)}/negatives`, { method: "POST", form });
    button.closest(".chip").classList.add("refuted");
    button.textContent = `Not ${r.name}: noted`;
    toast(`Noted: that is not ${r.name}. The next answer will not match it there.`);
  } catch (err) {
    button.disabled = false;
    toast(explain(err, "image"));
  }
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
  $("#chat").classList.add("talking");
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

/** The "why": which concepts the answer uses, each with thumbnail, reason and colour; shown again when they change. */
function showUsed(turn, found, { boxes = true } = {}) {
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
    if (photo && r.box && r.via === "image") {
      const not = document.createElement("button");
      not.type = "button";
      not.className = "ghost small not";
      not.textContent = `Not ${r.name}`;
      not.title = `The boxed region is not ${r.name}: retrieval will not match it there again`;
      not.addEventListener("click", () => notThis(r, not));
      chip.append(not);
    }
    list.append(chip);
  }
  const old = turn.querySelector(".used");
  if (old) old.replaceWith(list);
  else turn.querySelector(".text").before(list);
  follow(true);
  if (boxes && photo) drawBoxes(coloured);
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
  $("#chat-clear").disabled = busy;
}

function form(fields) {
  const body = new FormData();
  if (photo) body.append("image", photo, photo.name);
  for (const [key, value] of Object.entries(fields)) body.set(key, value);
  return body;
}

/** Start a turn of the log and of the saved chat. */
function begin(role, text, kind, note = null) {
  const entry = { role, text, kind, note, status: role === "user" ? "done" : "running", concepts: null };
  turns.push(entry);
  return [entry, addTurn(role, text, note)];
}

/**
 * Run one call; whatever happens, the controls come back and errors are said
 * plainly. A question that failed goes back into the box, ready to resend.
 */
async function call(entry, turn, work, question = null) {
  running = new AbortController();
  updateTools();
  const text = turn.querySelector(".text");
  try {
    await work(running.signal);
    entry.status = "done";
  } catch (err) {
    text.classList.remove("streaming");
    if (err.name === "AbortError") {
      entry.status = "stopped";
      turn.classList.add("stopped");
      text.textContent += text.textContent ? " (stopped)" : "(stopped)";
    } else {
      entry.status = "failed";
      turn.classList.add("failed");
      text.textContent = explain(err, "photo");
      if (question && !$("#question").value) $("#question").value = question;
    }
  } finally {
    entry.text = text.textContent;
    running = null;
    updateTools();
    save();
  }
}

function dataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** The chat so far as OpenAI messages: each answered question with its answer, the photo on the first. */
async function messages(question) {
  const out = [];
  let asked = null;
  for (const t of turns) {
    if (t.kind !== "chat") continue;
    if (t.role === "user") asked = t;
    else if (t.status === "done" && asked) {
      out.push({ role: "user", content: asked.text }, { role: "assistant", content: t.text });
      asked = null;
    }
  }
  out.push({ role: "user", content: question });
  if (photo) {
    const url = await dataURL(photo);
    out[0].content = [{ type: "image_url", image_url: { url } }, { type: "text", text: out[0].content }];
  }
  return out;
}

/** The answer from /v1/chat/completions, streamed: the first chunk carries the evidence, then the words. */
async function complete(history, entry, turn, signal) {
  const text = turn.querySelector(".text");
  text.classList.add("streaming");
  const response = await request("/v1/chat/completions", { method: "POST", json: { messages: history, stream: true }, signal });
  let finished = false;
  for await (const { data } of events(response)) {
    if (data === "[DONE]") break;
    if (data.error) throw new ApiError(502, data.error.code, data.error.message);
    if (data.rap_concepts) {
      entry.concepts = data.rap_concepts;
      showUsed(turn, entry.concepts);
    }
    const choice = (data.choices || [])[0];
    if (choice && choice.delta && choice.delta.content) {
      text.textContent += choice.delta.content;
      follow();
    }
    if (choice && choice.finish_reason) finished = true;
  }
  if (!finished) throw new ApiError(502, "stream", "the answer stopped before it was complete");
  text.textContent = text.textContent.trim();
  text.classList.remove("streaming");
}

/**
 * A form endpoint streamed (caption): a `retrieval` event with the evidence,
 * `token` events, then one `done` event with the whole answer, or an `error` event.
 */
async function stream(path, fields, entry, turn, signal) {
  const text = turn.querySelector(".text");
  text.classList.add("streaming");
  const response = await request(path, { method: "POST", form: form({ ...fields, stream: "true" }), signal });
  for await (const { event, data } of events(response)) {
    if (event === "retrieval") {
      entry.concepts = data.concepts;
      showUsed(turn, data.concepts);
    } else if (event === "token") {
      text.textContent += data.text;
      follow();
    } else if (event === "done") {
      text.textContent = data.answer;
      text.classList.remove("streaming");
      entry.concepts = data.concepts;
      showUsed(turn, data.concepts);
      return;
    } else if (event === "error") {
      throw new ApiError(502, data.error.code, data.error.message);
    }
  }
  throw new ApiError(502, "stream", "the answer stopped before it was complete");
}

async function ask(event) {
  event.preventDefault();
  if (running) return running.abort();
  const question = $("#question").value.trim();
  if (!question) return $("#question").focus();
  const history = await messages(question);
  begin("user", question, "chat", photo ? `about ${photo.name}` : null);
  $("#question").value = "";
  const [entry, turn] = begin("assistant", "", "chat");
  return call(entry, turn, (signal) => complete(history, entry, turn, signal), question);
}

function caption() {
  begin("user", "Caption this photo.", "tool", `about ${photo.name}`);
  const [entry, turn] = begin("assistant", "", "tool");
  return call(entry, turn, (signal) => stream("/v1/caption", {}, entry, turn, signal));
}

function recognize() {
  const name = $("#tool-concept").value;
  begin("user", `Is ${name} in this photo?`, "tool", `about ${photo.name}`);
  const [entry, turn] = begin("assistant", "", "tool");
  return call(entry, turn, async (signal) => {
    const result = await getJSON("/v1/recognize", { method: "POST", form: form({ name }), signal });
    const verdict =
      result.present === true ? `Yes, ${name} is in this photo.`
      : result.present === false ? `No, ${name} is not in this photo.`
      : `Not sure whether ${name} is here.`;
    turn.querySelector(".text").textContent = result.reply ? `${verdict} The model said: “${result.reply.trim()}”` : verdict;
    entry.concepts = result.match ? [result.match] : [];
    showUsed(turn, entry.concepts);
  });
}

function locate() {
  const name = $("#tool-concept").value;
  begin("user", `Where is ${name}?`, "tool", `about ${photo.name}`);
  const [entry, turn] = begin("assistant", "", "tool");
  return call(entry, turn, async (signal) => {
    const result = await getJSON("/v1/locate", { method: "POST", form: form({ name }), signal });
    const text = turn.querySelector(".text");
    if (result.found && result.box) {
      text.textContent = `${name} is in the box drawn on the photo (${result.box.join(", ")}).`;
      entry.concepts = [{ ...(result.match || { name, via: "image" }), box: result.box }];
    } else {
      text.textContent = `I could not find ${name} in this photo.`;
      entry.concepts = [];
    }
    showUsed(turn, entry.concepts);
  });
}

function fillConcepts() {
  const select = $("#tool-concept");
  const chosen = select.value;
  const options = concepts.list.map((c) => new Option(c.name, c.name, false, c.name === chosen));
  if (!options.length) options.push(new Option("no concepts yet", ""));
  select.replaceChildren(...options);
  if (selected) fillThisIs(selected.name);
  updateTools();
}

// -- keeping the chat ------------------------------------------------------------------

function save() {
  if (!owner) return;
  const kept = turns.filter((t) => t.status !== "running").map((t) => ({ ...t }));
  saveChat(owner, { photo, turns: kept });
}

/** Empty the log and the photo (the saved chat is replaced by the next save). */
function newChat() {
  if (running) running.abort();
  turns = [];
  $("#chat-log").replaceChildren();
  $("#chat").classList.remove("talking");
  showPhoto(null);
}

/** Bring back `user`'s saved chat, if any (after a reload or a sign-in). */
export async function restoreChat(user) {
  owner = user;
  const chat = await loadChat(user);
  if (!chat || owner !== user) return;
  newChat();
  if (chat.photo) showPhoto(chat.photo);
  turns = chat.turns || [];
  let last = null;
  for (const t of turns) {
    const item = addTurn(t.role, t.text, t.note);
    if (t.status === "failed") item.classList.add("failed");
    if (t.status === "stopped") item.classList.add("stopped");
    if (t.concepts) {
      showUsed(item, t.concepts, { boxes: false });
      last = t.concepts;
    }
  }
  if (last) drawBoxes(last.map((r, n) => ({ ...r, color: COLORS[n % COLORS.length] })));
}

/** Forget the conversation on screen (another user signing in); `forget` also drops the saved one (sign-out). */
export function resetChat({ forget = false } = {}) {
  if (forget && owner) forgetChat(owner);
  owner = null;
  newChat();
  setError($("#chat-photo-error"), null);
}

export function initChat() {
  $("#ask-form").addEventListener("submit", ask);
  $("#question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!running) $("#ask-form").requestSubmit();
    }
  });
  $("#chat-photo").addEventListener("change", (event) => choosePhoto(event.target.files[0] || null));
  $("#chat-photo-remove").addEventListener("click", () => {
    newChat();
    save();
    $("#chat-photo").focus();
  });
  $("#chat-clear").addEventListener("click", () => {
    newChat();
    if (owner) forgetChat(owner);
    $("#question").focus();
  });
  dropTarget($("#chat-drop"), (files) => choosePhoto(files[0]));
  dropTarget($("#chat-figure"), (files) => choosePhoto(files[0]));
  // A photo pasted while in the chat (a screenshot, a copied picture) becomes the photo asked about.
  $("#chat").addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files][0];
    if (file && !running) {
      event.preventDefault();
      choosePhoto(file);
    }
  });
  drawer = new BoxSelector($("#chat-frame"), $("#chat-image"), $("#chat-drawn"), (box) => {
    if (box) select({ box, name: null, category: null, drawn: true });
    else if (selected && selected.drawn) unselect();
  });
  $("#remember-as").addEventListener("click", rememberAs);
  $("#this-is").addEventListener("click", thisIs);
  $("#this-is-name").addEventListener("change", labelThisIs);
  $("#box-menu-close").addEventListener("click", () => {
    drawer.clear();
    unselect();
  });
  $("#caption").addEventListener("click", caption);
  $("#recognize").addEventListener("click", recognize);
  $("#locate").addEventListener("click", locate);
  $("#tool-concept").addEventListener("change", updateTools);
  concepts.addEventListener("change", fillConcepts);
  fillConcepts();
}
