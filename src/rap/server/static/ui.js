// Small helpers every part of the page uses.

export const $ = (selector, root = document) => root.querySelector(selector);

/** Show `message` in an error element, or hide it when message is null. */
export function setError(element, message) {
  element.textContent = message || "";
  element.hidden = !message;
}

let toastTimer = null;

/** A short confirmation that disappears by itself (announced to screen readers). */
export function toast(message) {
  const element = $("#toast");
  element.textContent = message;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, 4000);
}

/**
 * Run `work` with every control inside `root` disabled, and give them back
 * afterwards whatever happened: a failed call never leaves the page stuck.
 */
export async function withBusy(root, work) {
  const focused = document.activeElement;
  const controls = [...root.querySelectorAll("button, input, textarea, select")].filter((c) => !c.disabled);
  root.setAttribute("aria-busy", "true");
  controls.forEach((c) => (c.disabled = true));
  try {
    return await work();
  } finally {
    controls.forEach((c) => (c.disabled = false));
    root.removeAttribute("aria-busy");
    // Disabling the focused control drops focus to <body>: give it back.
    if (focused && focused.isConnected && document.activeElement === document.body) focused.focus();
  }
}
