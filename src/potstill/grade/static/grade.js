// Keyboard shortcuts for the grading pages. The pages work without this file.
(function () {
  "use strict";
  const form = document.getElementById("grade-form");
  if (!form) return;
  const button = document.getElementById("next");
  const groups = Array.from(form.querySelectorAll("fieldset.criterion"));
  let active = 0;

  function highlight() {
    groups.forEach((g, i) => g.classList.toggle("active", i === active));
  }
  function move(step) {
    active = Math.max(0, Math.min(groups.length - 1, active + step));
    highlight();
  }
  function save() {
    if (form.reportValidity()) form.requestSubmit();
  }
  function choose(selector) {
    const input = form.querySelector(selector);
    if (input) input.checked = true;
    return Boolean(input);
  }

  groups.forEach((group, i) => {
    group.addEventListener("change", () => {
      active = i;
      move(1);
    });
  });
  form.addEventListener("submit", () => {
    // A double click must not send the same form twice.
    setTimeout(() => { button.disabled = true; }, 0);
  });
  highlight();

  const pairKeys = { a: "A", arrowleft: "A", t: "tie", arrowdown: "tie", b: "B", arrowright: "B" };
  document.addEventListener("keydown", (event) => {
    const key = event.key.toLowerCase();
    if (event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement && event.target.type === "text") {
      if (key === "enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        save();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (form.dataset.mode === "pointwise" && groups.length) {
      if (/^[0-9]$/.test(key)) {
        if (choose(`fieldset.criterion.active input[value="${key}"]`)) move(1);
        event.preventDefault();
        return;
      }
      if (key === "arrowdown" || key === "arrowup") {
        move(key === "arrowdown" ? 1 : -1);
        event.preventDefault();
        return;
      }
    }
    if (form.dataset.mode === "pairwise" && key in pairKeys) {
      choose(`input[name="choice"][value="${pairKeys[key]}"]`);
      event.preventDefault();
      return;
    }
    if (key === "n" || key === "enter") {
      event.preventDefault();
      save();
    }
  });
})();
