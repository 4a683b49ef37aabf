// spawn_form.js: on the spawn options form, show only the fields of the chosen profile (the
// server reads only those; this just keeps the form short). No inline code: CSP.
const form = document.getElementById("spawn-form");

function update() {
  const chosen = form.querySelector("input[name=profile]:checked");
  for (const fields of form.querySelectorAll(".hm-profile-fields")) {
    fields.hidden = !chosen || fields.dataset.profile !== chosen.value;
  }
}

if (form) {
  for (const radio of form.querySelectorAll("input[name=profile]")) {
    radio.addEventListener("change", update);
  }
  update();
}
