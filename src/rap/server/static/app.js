// The page's entry point: sign-in, then concepts and chat. Signing out or in
// as someone else forgets everything the page held, so nobody sees another
// user's concepts or conversation; signing out also drops the chat this
// browser kept for a reload.

import { ApiError, apiKey, auth, explain, getJSON, setApiKey } from "./api.js";
import { initChat, resetChat, restoreChat } from "./chat.js";
import { initConcepts, loadConcepts, resetConcepts } from "./concepts.js";
import { forgetImages } from "./images.js";
import { initPhotos, resetPhotos } from "./photos.js";
import { $, setError, withBusy } from "./ui.js";

function forgetEverything(signedOut = false) {
  resetChat({ forget: signedOut });
  resetConcepts();
  forgetImages();
  resetPhotos();
}

function showSignIn(message = null) {
  const dialog = $("#signin-dialog");
  setError($("#signin-error"), message);
  if (!dialog.open) dialog.showModal();
  $("#signin-key").focus();
}

async function start() {
  try {
    const me = await getJSON("/v1/me");
    $("#sign-out").hidden = !apiKey();
    $("#session-user").textContent = apiKey() ? `Signed in as ${me.user}` : "";
    await loadConcepts();
    await restoreChat(me.user);
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false; // the sign-in is showing
    setError($("#concepts-error"), explain(err));
    return true;
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#signin-key").value.trim();
  if (!key) return;
  await withBusy($("#signin-form"), async () => {
    forgetEverything();
    setApiKey(key);
    if (await start()) {
      $("#signin-form").reset();
      $("#signin-dialog").close();
      $("#question").focus();
    }
  });
}

function signOut() {
  forgetEverything(true);
  setApiKey(null);
  $("#sign-out").hidden = true;
  $("#session-user").textContent = "";
  showSignIn();
}

auth.addEventListener("unauthorized", () => {
  const hadKey = !!apiKey();
  if (hadKey) setApiKey(null);
  forgetEverything();
  $("#sign-out").hidden = true;
  $("#session-user").textContent = "";
  showSignIn(hadKey ? "That API key was not accepted. Check it and sign in again." : null);
});

// The sign-in cannot be dismissed with Escape: there is nothing to show behind it.
$("#signin-dialog").addEventListener("cancel", (event) => event.preventDefault());
$("#signin-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", signOut);
initConcepts();
initChat();
initPhotos();
start();
