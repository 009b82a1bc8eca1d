// Draw a box on a photo, then cut that part out in the browser before upload,
// so a concept can be taken from a larger picture.

const MIN_SIDE = 8; // displayed pixels; anything smaller is a click, not a box
const STEP = 0.02; // of the photo's side, per arrow key press

export class BoxSelector {
  /** frame: positioned element holding `img` and the `box` outline. */
  constructor(frame, img, box, onChange) {
    this.frame = frame;
    this.img = img;
    this.boxEl = box;
    this.onChange = onChange;
    this.box = null; // [x0, y0, x1, y1] in the image's own pixels
    this.start = null;
    frame.addEventListener("pointerdown", (event) => this.#down(event));
    frame.addEventListener("pointermove", (event) => this.#move(event));
    frame.addEventListener("pointerup", (event) => this.#up(event));
    frame.addEventListener("pointercancel", () => this.clear());
    frame.addEventListener("keydown", (event) => this.#key(event));
    // the click that ends a drag is not a click on what lies under it
    frame.addEventListener(
      "click",
      (event) => {
        if (!this.dragged) return;
        this.dragged = false;
        event.stopPropagation();
        event.preventDefault();
      },
      true,
    );
  }

  /** Keyboard: arrows move the box (one appears in the middle), Shift+arrows resize it, Delete clears it. */
  #key(event) {
    const width = this.img.naturalWidth;
    const height = this.img.naturalHeight;
    if (!width) return;
    if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      return this.clear();
    }
    const move = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
    if (!move) return;
    event.preventDefault();
    let [x0, y0, x1, y1] = this.box || [width / 4, height / 4, (3 * width) / 4, (3 * height) / 4];
    const dx = move[0] * STEP * width;
    const dy = move[1] * STEP * height;
    if (event.shiftKey) {
      x1 = Math.min(Math.max(x1 + dx, x0 + MIN_SIDE), width);
      y1 = Math.min(Math.max(y1 + dy, y0 + MIN_SIDE), height);
    } else if (this.box) {
      const sx = Math.min(Math.max(dx, -x0), width - x1);
      const sy = Math.min(Math.max(dy, -y0), height - y1);
      [x0, y0, x1, y1] = [x0 + sx, y0 + sy, x1 + sx, y1 + sy];
    }
    this.box = [x0, y0, x1, y1].map(Math.round);
    const rect = this.img.getBoundingClientRect();
    const scale = rect.width / width;
    this.#draw(x0 * scale, y0 * scale, x1 * scale, y1 * scale);
    this.onChange(this.box);
  }

  clear() {
    this.box = null;
    this.start = null;
    this.boxEl.hidden = true;
    this.onChange(null);
  }

  #point(event) {
    const rect = this.img.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return [x, y, rect];
  }

  #down(event) {
    if (event.button !== 0 || !this.img.naturalWidth) return;
    this.dragged = false;
    // On a button over the photo (a retrieved concept's box) a click stays a click, and a drag still draws.
    if (!event.target.closest("button")) {
      event.preventDefault();
      this.frame.setPointerCapture(event.pointerId);
    }
    const [x, y] = this.#point(event);
    this.start = [x, y];
    this.#draw(x, y, x, y);
  }

  #move(event) {
    if (!this.start) return;
    const [x, y] = this.#point(event);
    this.#draw(this.start[0], this.start[1], x, y);
  }

  #up(event) {
    if (!this.start) return;
    const [x, y, rect] = this.#point(event);
    const [sx, sy] = this.start;
    this.start = null;
    if (Math.abs(x - sx) < MIN_SIDE || Math.abs(y - sy) < MIN_SIDE) {
      this.clear();
      return;
    }
    const scaleX = this.img.naturalWidth / rect.width;
    const scaleY = this.img.naturalHeight / rect.height;
    this.box = [
      Math.round(Math.min(sx, x) * scaleX),
      Math.round(Math.min(sy, y) * scaleY),
      Math.round(Math.max(sx, x) * scaleX),
      Math.round(Math.max(sy, y) * scaleY),
    ];
    this.#draw(sx, sy, x, y);
    this.dragged = true;
    this.onChange(this.box);
  }

  #draw(x0, y0, x1, y1) {
    const offsetX = this.img.offsetLeft;
    const offsetY = this.img.offsetTop;
    Object.assign(this.boxEl.style, {
      left: `${offsetX + Math.min(x0, x1)}px`,
      top: `${offsetY + Math.min(y0, y1)}px`,
      width: `${Math.abs(x1 - x0)}px`,
      height: `${Math.abs(y1 - y0)}px`,
    });
    this.boxEl.hidden = false;
  }
}

/** The part of `file` inside `box` (image pixels, EXIF-rotated as shown), as a JPEG file. */
export async function cropFile(file, box) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const [x0, y0, x1, y1] = box;
  const canvas = document.createElement("canvas");
  canvas.width = x1 - x0;
  canvas.height = y1 - y0;
  canvas.getContext("2d").drawImage(bitmap, x0, y0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  const stem = file.name.replace(/\.[^.]*$/, "") || "photo";
  return new File([blob], `${stem}-crop.jpg`, { type: "image/jpeg" });
}
