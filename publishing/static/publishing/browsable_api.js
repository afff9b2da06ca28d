// The browsable API's PATCH forms: a password field left empty (a webhook secret, which is never
// shown back) is left out of the request, so the stored secret is kept rather than cleared. DRF's
// ajax-form.js builds the request from the form on "submit"; this listens in the capture phase,
// before it.
(function () {
  "use strict";
  document.addEventListener(
    "submit",
    function (event) {
      const form = event.target;
      if (!(form instanceof HTMLFormElement) || form.dataset.method !== "PATCH") {
        return;
      }
      form.querySelectorAll('input[type="password"]').forEach(function (input) {
        if (input.value === "") {
          input.disabled = true;
        }
      });
    },
    true
  );
})();
