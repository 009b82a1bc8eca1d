// Concept images need the Authorization header, which <img src> cannot send:
// they are fetched once, kept as object URLs, and dropped on sign-out.

import { request } from "./api.js";

const cache = new Map();

export function conceptPath(name) {
  return `/v1/concepts/${encodeURIComponent(name)}`;
}

/** An object URL for one reference image of a concept, `size` px on its long side. */
function imageURL(name, image, size = 256) {
  const key = `${name}\u0000${image.sha256 || image.id}\u0000${size}`;
  if (!cache.has(key)) {
    const url = request(`${conceptPath(name)}/images/${image.id}?size=${size}`)
      .then((response) => response.blob())
      .then((blob) => URL.createObjectURL(blob));
    url.catch(() => cache.delete(key));
    cache.set(key, url);
  }
  return cache.get(key);
}

/** Point `img` at a concept image; on failure it keeps its placeholder look. */
export function showImage(img, name, image, size = 256) {
  img.removeAttribute("src");
  if (!image) return;
  imageURL(name, image, size).then(
    (url) => {
      img.src = url;
    },
    () => img.classList.add("missing"),
  );
}

export function forgetImages() {
  for (const url of cache.values()) url.then(URL.revokeObjectURL, () => {});
  cache.clear();
}
