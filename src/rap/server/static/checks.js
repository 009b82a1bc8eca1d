// Is this file a photo the server can use? Said at the moment it is chosen, in
// words, instead of after an upload: a text file is "not an image", a photo
// cut short is "broken". The bytes decide, not the name or the declared type.

const KINDS = [
  { name: "JPEG", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff, complete: jpegComplete },
  { name: "PNG", test: (b) => ascii(b, 1, 4) === "PNG", complete: (b, tail) => ascii(tail, tail.length - 8, tail.length - 4) === "IEND" },
  { name: "GIF", test: (b) => ascii(b, 0, 4) === "GIF8", complete: (b, tail) => tail[tail.length - 1] === 0x3b },
  { name: "WebP", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP", complete: riffComplete },
  { name: "BMP", test: (b) => ascii(b, 0, 2) === "BM" },
  { name: "TIFF", test: (b) => ascii(b, 0, 4) === "II*\u0000" || ascii(b, 0, 4) === "MM\u0000*", shown: false },
  { name: "HEIC", test: (b) => ascii(b, 4, 8) === "ftyp" && /^(hei|hev|mif|msf|avi)/.test(ascii(b, 8, 12)), shown: false },
];

function ascii(bytes, start, end) {
  return String.fromCharCode(...bytes.slice(Math.max(start, 0), Math.max(end, 0)));
}

/** A JPEG ends with its EOI marker (FF D9), give or take padding a camera appends. */
function jpegComplete(head, tail) {
  for (let i = tail.length - 2; i >= 0; i--) if (tail[i] === 0xff && tail[i + 1] === 0xd9) return true;
  return false;
}

/** A RIFF file says its own length. */
function riffComplete(head, tail, size) {
  const declared = head[4] | (head[5] << 8) | (head[6] << 16) | (head[7] << 24);
  return size >= declared + 8;
}

async function bytes(blob) {
  return new Uint8Array(await blob.arrayBuffer());
}

/**
 * null if `file` looks like a whole image, else the sentence to show.
 * `{ shown }` says whether this browser can draw it (HEIC and TIFF: only the server can read them).
 */
export async function checkImage(file) {
  const name = `“${file.name || "this file"}”`;
  if (!file.size) return { error: `${name} is empty: it is not an image. Choose a JPEG, PNG, WebP or HEIC photo.` };
  const head = await bytes(file.slice(0, 16));
  const kind = KINDS.find((k) => k.test(head));
  if (!kind) return { error: `${name} is not an image. Choose a JPEG, PNG, WebP or HEIC photo.` };
  const tail = await bytes(file.slice(Math.max(0, file.size - 4096)));
  if (kind.complete && !kind.complete(head, tail, file.size)) {
    return { error: `${name} is a broken ${kind.name} image: the file is cut short. Choose another photo, or copy it again.` };
  }
  if (kind.shown === false) return { error: null, shown: false };
  try {
    const bitmap = await createImageBitmap(file);
    bitmap.close();
  } catch {
    return { error: `${name} is a damaged ${kind.name} image that cannot be read. Choose another photo.` };
  }
  return { error: null, shown: true };
}
