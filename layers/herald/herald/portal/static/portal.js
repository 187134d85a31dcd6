// A form marked data-submit-once is sent once. A second click while the first request is on its way (a
// double-click) would send it again: the one-time link of the sign-in page, spent by the first request, would
// then answer "This link does not work", although the first signed in; a new endpoint would be created twice (two
// endpoints, two secrets, every event sent to both); a test event, a retry or a secret's rotation made twice.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-submit-once")) {
    return;
  }
  if (form.dataset.sent === "yes") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "yes";
  form.setAttribute("aria-busy", "true");
});

// A page the browser shows again from its back/forward cache can be sent again. (One whose navigation was stopped,
// Esc or the stop button, keeps its form sent until it is reloaded: no event tells the page.)
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-submit-once]")) {
    delete form.dataset.sent;
    form.removeAttribute("aria-busy");
  }
});

// A recovery job's progress is polled every 2 s, inside a live region: a poll that brings the same text is not
// swapped in, so that the region announces changes only, not the same progress every 2 s.
document.addEventListener("htmx:beforeSwap", (event) => {
  const { target, xhr, serverResponse } = event.detail;
  if (!(target instanceof HTMLElement) || target.id !== "job" || xhr.status !== 200) {
    return;
  }
  const polled = new DOMParser().parseFromString(serverResponse, "text/html").getElementById("job");
  if (polled !== null && polled.textContent === target.textContent) {
    event.detail.shouldSwap = false;
  }
});
