// The Photos view: your photo library (upload, a concept's photos as a grid
// with the concept's box on each, and the subjects that recur unnamed, each
// with "Name this…"). Photos need the Authorization header, so each is fetched
// and shown from an object URL, forgotten when the view closes.

import { explain, getJSON, request } from "./api.js";
import { loadConcepts } from "./concepts.js";
import { $, setError, toast, withBusy } from "./ui.js";

const urls = new Map();

const photosOf = (n) => `${n} photo${n === 1 ? "" : "s"}`;

function photoURL(id) {
  if (!urls.has(id)) {
    const url = request(`/v1/photos/${id}`).then((r) => r.blob()).then((blob) => URL.createObjectURL(blob));
    url.catch(() => urls.delete(id));
    urls.set(id, url);
  }
  return urls.get(id);
}

/** A tile: the photo, and `box` ([x0, y0, x1, y1] in its pixels) drawn over it. */
function tile(id, box, label) {
  const item = document.createElement("li");
  item.className = "photo-tile";
  const frame = document.createElement("div");
  frame.className = "tile-frame";
  const img = document.createElement("img");
  img.alt = label;
  frame.append(img);
  const mark = document.createElement("div");
  mark.className = "tile-box";
  frame.append(mark);
  const place = (width, height) => {
    mark.style.left = `${(100 * box[0]) / width}%`;
    mark.style.top = `${(100 * box[1]) / height}%`;
    mark.style.width = `${(100 * (box[2] - box[0])) / width}%`;
    mark.style.height = `${(100 * (box[3] - box[1])) / height}%`;
  };
  img.addEventListener("load", () => place(img.naturalWidth, img.naturalHeight));
  photoURL(id).then((url) => (img.src = url), () => img.classList.add("missing"));
  item.append(frame);
  return item;
}

async function showConcept() {
  const name = $("#photos-concept").value;
  const grid = $("#photos-grid");
  grid.replaceChildren();
  setError($("#photos-error"), null);
  if (!name) return;
  try {
    const { photos } = await getJSON(`/v1/photos?concept=${encodeURIComponent(name)}`);
    grid.replaceChildren(...photos.map((p) => tile(p.id, p.box, `A photo of <${name}> (${p.match})`)));
    $("#photos-status").textContent = photos.length ? `${photosOf(photos.length)} of <${name}>` : `No photo of <${name}> yet.`;
  } catch (err) {
    setError($("#photos-error"), explain(err));
  }
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("image", file);
  setError($("#photos-error"), null);
  await withBusy($("#photos-dialog"), async () => {
    try {
      const { photos } = await getJSON("/v1/photos", { method: "POST", form });
      $("#photos-status").textContent = `${photosOf(photos.length)} added; they are being indexed.`;
      toast(`${photosOf(photos.length)} added to your library`);
    } catch (err) {
      setError($("#photos-error"), explain(err, "photo"));
    }
  });
}

async function nameGroup(group, form) {
  const name = form.querySelector(".group-name").value.trim();
  const category = form.querySelector(".group-category").value.trim() || "object";
  if (!name) return;
  await withBusy(form, async () => {
    try {
      await getJSON(`/v1/photos/suggestions/${group}/name`, { method: "POST", json: { name, category } });
      toast(`Remembered <${name}>`);
      await loadConcepts();
      await fillConcepts(name);
      await showSuggestions();
      await showConcept();
    } catch (err) {
      setError(form.querySelector(".error"), explain(err));
    }
  });
}

async function showSuggestions() {
  const list = $("#suggestions");
  list.replaceChildren();
  setError($("#photos-error"), null);
  try {
    const { groups } = await getJSON("/v1/photos/suggestions");
    if (!groups.length) $("#photos-status").textContent = "Nothing recurs in your photos that is not one of your concepts.";
    for (const group of groups) {
      const item = $("#suggestion-template").content.firstElementChild.cloneNode(true);
      item.querySelector(".group-title").textContent = `In ${photosOf(group.photos)}`;
      item.querySelector(".group-photos").replaceChildren(
        ...group.sample.map((s) => tile(s.id, s.box, `A photo of group ${group.group}`)),
      );
      const form = item.querySelector("form");
      item.querySelector(".name-this").addEventListener("click", () => {
        form.hidden = false;
        form.querySelector(".group-name").focus();
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        nameGroup(group.group, form);
      });
      list.append(item);
    }
  } catch (err) {
    setError($("#photos-error"), explain(err));
  }
}

async function fillConcepts(selected = null) {
  const select = $("#photos-concept");
  const { concepts } = await getJSON("/v1/concepts");
  const keep = selected ?? select.value;
  select.replaceChildren(...concepts.map((c) => new Option(`<${c.name}>`, c.name)));
  if (keep && concepts.some((c) => c.name === keep)) select.value = keep;
}

export function resetPhotos() {
  for (const url of urls.values()) url.then(URL.revokeObjectURL, () => {});
  urls.clear();
  $("#photos-grid").replaceChildren();
  $("#suggestions").replaceChildren();
  $("#photos-status").textContent = "";
}

export function initPhotos() {
  $("#open-photos").addEventListener("click", async () => {
    $("#photos-dialog").showModal();
    try {
      await fillConcepts();
    } catch (err) {
      setError($("#photos-error"), explain(err));
    }
  });
  $("#photos-close").addEventListener("click", () => {
    $("#photos-dialog").close();
    resetPhotos();
  });
  $("#photos-upload").addEventListener("change", async (event) => {
    await upload([...event.target.files]);
    event.target.value = "";
  });
  $("#photos-show").addEventListener("click", showConcept);
  $("#photos-suggest").addEventListener("click", showSuggestions);
}
