// "My concepts": the grid, search, add (with an optional crop), inline
// description edit, reference images, delete. Every change goes through the
// API and then into the grid, so the next question sees it at once; changes
// made elsewhere (another tab, the API) are picked up by polling with ETags.

import { ApiError, explain, getJSON, request } from "./api.js";
import { checkImage } from "./checks.js";
import { BoxSelector, cropFile } from "./crop.js";
import { conceptPath, showImage } from "./images.js";
import { $, setError, toast, withBusy } from "./ui.js";

const PAGE = 100;
const POLL_MS = 5000; // how often the list is checked for changes made elsewhere (a 304 while there are none)

/** The signed-in user's concepts; fires "change" whenever the list changes. */
export const concepts = Object.assign(new EventTarget(), {
  list: [],
  loaded: false, // false until the first list arrives: no "nothing here" before we know
  find(name) {
    const key = name.toLowerCase();
    return this.list.find((c) => c.name.toLowerCase() === key) || null;
  },
});

function sorted(list) {
  return list.sort((a, b) => a.name.localeCompare(b.name));
}

function changed() {
  sorted(concepts.list);
  concepts.dispatchEvent(new Event("change"));
  render();
}

export function upsert(concept, previousName = concept.name) {
  const at = concepts.list.findIndex((c) => c.name === previousName);
  if (at >= 0) concepts.list[at] = concept;
  else concepts.list.push(concept);
  changed();
}

let pages = []; // each page's cursor and ETag, as last loaded
let poller = null;

/** Load every concept, page by page. */
export async function loadConcepts() {
  setError($("#concepts-error"), null);
  const all = [];
  const seen = [];
  let cursor = null;
  do {
    const response = await request(pagePath(cursor));
    const page = await response.json();
    seen.push({ cursor, etag: response.headers.get("ETag") });
    all.push(...page.concepts);
    cursor = page.next_cursor;
  } while (cursor);
  pages = seen;
  // the page's own edits change the ETags too: redraw only when the list differs from what is shown
  const same = concepts.loaded && JSON.stringify(sorted(all)) === JSON.stringify(concepts.list);
  concepts.list = all;
  concepts.loaded = true;
  if (!same) changed();
  clearInterval(poller);
  poller = setInterval(poll, POLL_MS);
}

function pagePath(cursor) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (cursor) query.set("cursor", cursor);
  return `/v1/concepts?${query}`;
}

/**
 * Has the list changed elsewhere? Each page is asked for with its ETag (a 304
 * says no); on a change the whole list is reloaded. Not while the user is
 * editing here (an open editor or dialog would be redrawn under them).
 */
async function poll() {
  if (document.hidden || !concepts.loaded || busyHere()) return;
  try {
    for (const { cursor, etag } of pages) {
      const response = await request(pagePath(cursor), { etag });
      if (response.status !== 304) return busyHere() || (await loadConcepts());
    }
  } catch {
    // offline for a moment, or signed out: the next poll tries again
  }
}

function busyHere() {
  return !!document.querySelector("dialog[open], #concept-grid .info-edit:not([hidden]), [aria-busy]");
}

export function resetConcepts() {
  clearInterval(poller);
  poller = null;
  pages = [];
  concepts.list = [];
  concepts.loaded = false;
  changed();
}

// -- the grid -------------------------------------------------------------------------

function render() {
  const grid = $("#concept-grid");
  const filter = $("#concept-search").value.trim().toLowerCase();
  const shown = concepts.list.filter((c) => c.name.toLowerCase().includes(filter));
  const active = document.activeElement;
  const focusedCard = active && active.closest("#concept-grid .card");
  const refocus = focusedCard && active.dataset.action && [focusedCard.dataset.name, active.dataset.action];
  grid.replaceChildren(...shown.map(card));
  const count = concepts.list.length;
  $("#concept-count").textContent = count ? String(count) : "";
  const empty = $("#concepts-empty");
  empty.hidden = !concepts.loaded || (count > 0 && shown.length > 0);
  empty.textContent = count
    ? `No concept's name contains “${filter}”.`
    : "No concepts yet. Add a photo of your dog, a friend or your favourite mug, give it a name, " +
      "and the assistant will recognize it from then on.";
  if (refocus) focusAction(...refocus);
}

function focusAction(name, action) {
  const target = $(`#concept-grid .card[data-name="${CSS.escape(name)}"] [data-action="${action}"]`);
  if (target) target.focus();
}

function card(concept) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.name = concept.name;
  const img = node.querySelector(".thumb img");
  img.alt = `${concept.name}`;
  showImage(img, concept.name, concept.images[0]);
  node.querySelector(".name").textContent = concept.name;
  node.querySelector(".category").textContent = concept.category;
  const info = node.querySelector(".info");
  info.textContent = concept.info || "No description yet.";
  info.classList.toggle("muted", !concept.info);

  const edit = node.querySelector(".edit");
  edit.setAttribute("aria-label", `Edit the description of ${concept.name}`);
  edit.addEventListener("click", () => openEdit(node, concept));

  const images = node.querySelector(".images");
  const n = concept.images.length;
  images.textContent = `${n} image${n === 1 ? "" : "s"}`;
  images.setAttribute("aria-label", `Reference images of ${concept.name}: ${n}`);
  images.addEventListener("click", () => openImages(concept.name));

  const remove = node.querySelector(".delete");
  remove.setAttribute("aria-label", `Delete ${concept.name}`);
  remove.addEventListener("click", () => confirmDelete(concept.name, remove));
  return node;
}

function openEdit(node, concept) {
  const form = node.querySelector(".info-edit");
  const text = form.querySelector("textarea");
  const error = form.querySelector(".error");
  const info = node.querySelector(".info");
  const close = () => {
    form.hidden = true;
    info.hidden = false;
    node.querySelector(".edit").focus();
  };
  text.value = concept.info;
  setError(error, null);
  info.hidden = true;
  form.hidden = false;
  text.focus();
  form.querySelector(".cancel").onclick = close;
  form.onkeydown = (event) => {
    if (event.key === "Escape") close();
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  };
  form.onsubmit = (event) => {
    event.preventDefault();
    withBusy(form, async () => {
      try {
        const updated = await getJSON(conceptPath(concept.name), { method: "PATCH", json: { info: text.value } });
        upsert(updated, concept.name);
        toast(`Saved: the next answer about ${updated.name} uses the new description.`);
        focusAction(updated.name, "edit");
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return gone(concept.name, err);
        setError(error, explain(err));
      }
    });
  };
}

function gone(name, err) {
  concepts.list = concepts.list.filter((c) => c.name !== name);
  changed();
  setError($("#concepts-error"), explain(err));
}

// -- delete -----------------------------------------------------------------------------

function confirmDelete(name, opener) {
  const dialog = $("#delete-dialog");
  $("#delete-text").textContent = `“${name}”, its images and description will be forgotten. This cannot be undone.`;
  $("#delete-title").textContent = `Delete ${name}?`;
  setError($("#delete-error"), null);
  const confirm = $("#delete-confirm");
  confirm.onclick = (event) => {
    event.preventDefault();
    withBusy(dialog, async () => {
      try {
        await getJSON(conceptPath(name), { method: "DELETE" });
        concepts.list = concepts.list.filter((c) => c.name !== name);
        dialog.close();
        changed();
        toast(`Deleted ${name}.`);
        $("#concept-search").focus();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          dialog.close();
          return gone(name, err);
        }
        setError($("#delete-error"), explain(err));
      }
    });
  };
  dialog.onclose = () => {
    if (document.contains(opener)) opener.focus();
  };
  dialog.showModal();
}

// -- reference images ---------------------------------------------------------------

let imagesOf = null;

function openImages(name) {
  imagesOf = name;
  setError($("#images-error"), null);
  renderImages();
  $("#images-dialog").showModal();
}

function renderImages() {
  const concept = concepts.find(imagesOf);
  if (!concept) return $("#images-dialog").close();
  $("#images-title").textContent = `Reference images of ${concept.name}`;
  const last = concept.images.length === 1;
  $("#images-list").replaceChildren(
    ...concept.images.map((image, n) => {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.alt = `${concept.name}, image ${n + 1}`;
      showImage(img, concept.name, image);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small danger-text";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove image ${n + 1} of ${concept.name}`);
      remove.disabled = last;
      remove.title = last ? "A concept needs at least one image" : "";
      remove.addEventListener("click", () => editImages(concept.name, null, image.id));
      item.append(img, remove);
      return item;
    }),
  );
}

async function editImages(name, files, removeId) {
  const dialog = $("#images-dialog");
  setError($("#images-error"), null);
  await withBusy(dialog, async () => {
    try {
      let updated;
      if (files) {
        const form = new FormData();
        for (const file of files) form.append("image", file);
        updated = await getJSON(`${conceptPath(name)}/images`, { method: "POST", form });
      } else {
        updated = await getJSON(`${conceptPath(name)}/images/${removeId}`, { method: "DELETE" });
      }
      if (!updated || !updated.name) updated = await getJSON(conceptPath(name));
      upsert(updated, name);
      renderImages();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && !concepts.find(name)) return gone(name, err);
      setError($("#images-error"), explain(err, "image"));
    }
  });
  $("#images-add").value = "";
}

// -- add ------------------------------------------------------------------------------

let photo = null;
let selector = null;

/** Show the chosen photo, checked first: a file that is not a whole image is refused with a reason. */
async function setPhoto(file) {
  const check = file ? await checkImage(file) : { error: null };
  if (check.error) {
    $("#add-photo").value = "";
    setError($("#add-error"), check.error);
    return;
  }
  photo = file;
  selector.clear();
  setError($("#add-error"), null);
  const img = $("#add-image");
  if (img.src) URL.revokeObjectURL(img.src);
  $("#add-nopreview").hidden = true;
  $("#add-preview").hidden = true;
  $("#add-drop").hidden = !!file;
  if (!file) {
    img.removeAttribute("src");
    return;
  }
  if (!check.shown) {
    // HEIC and TIFF: the server reads what this browser cannot show.
    img.removeAttribute("src");
    $("#add-nopreview").hidden = false;
    $("#add-nopreview").replaceChildren(`No preview for “${file.name}” in this browser; the server will read it. `, changeButton());
    return;
  }
  img.onload = () => {
    $("#add-preview").hidden = false;
  };
  img.src = URL.createObjectURL(file);
}

function changeButton() {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "ghost small";
  button.textContent = "Change photo";
  button.addEventListener("click", () => $("#add-photo").click());
  return button;
}

/** The add dialog, empty, or filled from the chat ("Remember as…": a crop of its photo, and what was said). */
export async function openAdd({ file = null, category = "", info = "" } = {}) {
  $("#add-form").reset();
  await setPhoto(file);
  $("#add-category").value = category;
  $("#add-info").value = info;
  $("#add-dialog").showModal();
  (file ? $("#add-name") : $("#add-photo")).focus();
}

async function submitAdd(event) {
  event.preventDefault();
  const form = $("#add-form");
  const error = $("#add-error");
  setError(error, null);
  if (!photo) {
    setError(error, "Choose a photo of the concept first.");
    $("#add-photo").focus();
    return;
  }
  await withBusy(form, async () => {
    try {
      const image = selector.box ? await cropFile(photo, selector.box) : photo;
      const body = new FormData();
      body.set("name", $("#add-name").value.trim());
      body.set("category", $("#add-category").value.trim());
      body.set("info", $("#add-info").value.trim());
      body.append("image", image, image.name);
      const concept = await getJSON("/v1/concepts", { method: "POST", form: body });
      $("#add-dialog").close();
      $("#concept-search").value = "";
      upsert(concept);
      toast(`Added ${concept.name}. Ask about a photo of it.`);
    } catch (err) {
      setError(error, explain(err, "photo"));
    }
  });
}

/** Let files be dropped on `zone`. */
export function dropTarget(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFiles(event.dataTransfer.files);
  });
}

export function initConcepts() {
  $("#concept-search").addEventListener("input", render);
  $("#add-concept").addEventListener("click", () => openAdd());
  $("#add-cancel").addEventListener("click", () => $("#add-dialog").close());
  $("#add-form").addEventListener("submit", submitAdd);
  $("#add-photo").addEventListener("change", (event) => setPhoto(event.target.files[0] || null));
  $("#add-photo-change").addEventListener("click", () => $("#add-photo").click());
  dropTarget($("#add-drop"), (files) => setPhoto(files[0]));
  selector = new BoxSelector($("#crop-frame"), $("#add-image"), $("#crop-box"), (box) => {
    $("#crop-clear").hidden = !box;
    $("#crop-hint").textContent = box
      ? `Only the boxed part (${box[2] - box[0]} × ${box[3] - box[1]} px) will be kept.`
      : "Drag on the photo (or use the arrow keys) to draw a box around the concept: only that part is kept.";
  });
  $("#crop-clear").addEventListener("click", () => selector.clear());
  $("#images-close").addEventListener("click", () => $("#images-dialog").close());
  $("#images-add").addEventListener("change", (event) => {
    if (event.target.files.length) editImages(imagesOf, [...event.target.files]);
  });
  dropTarget($("#images-dialog"), (files) => editImages(imagesOf, [...files]));
}
