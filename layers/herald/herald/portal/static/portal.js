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
