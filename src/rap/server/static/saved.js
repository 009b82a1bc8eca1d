// The current chat, kept in this browser's IndexedDB so a reload brings it back:
// its turns and its photo (as the file itself; photos are too big for
// localStorage). One chat per user of this server, forgotten by "New chat" and
// by signing out. The server keeps no conversation: each follow-up sends the
// turns again, as any OpenAI-style client does.

const DB = "rap-chat";
const STORE = "chats";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** The chat saved for `user`, or null. A browser that keeps no storage (private mode) just forgets. */
export async function loadChat(user) {
  try {
    return (await run("readonly", (store) => store.get(user))) || null;
  } catch {
    return null;
  }
}

export async function saveChat(user, chat) {
  try {
    await run("readwrite", (store) => store.put(chat, user));
  } catch {
    // no storage: the chat still works, it is just not kept across a reload
  }
}

export async function forgetChat(user) {
  try {
    await run("readwrite", (store) => store.delete(user));
  } catch {
    // nothing was kept
  }
}
