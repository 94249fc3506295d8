// Scored questionnaires (PHQ-9, GAD-7, AUDIT-C), shared by the handler's first-contact form and the
// clinician's page: choose one, ask each question, score it. Every unanswered question is named next
// to it before anything is sent; what the server refuses is shown the same way. Results list below.

import { api } from "./common.js";

let definitions = null;
const loadDefinitions = () => (definitions ||= api("GET", "/api/questionnaires").then((data) => data.questionnaires));

const when = (iso) => new Date(iso).toLocaleString("en-GB", {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "Europe/London",
});

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/**
 * Fill `root` with the questionnaire picker, the chosen questionnaire's questions and the results.
 * `prefix` keeps ids unique on the page; `onResult(result)` runs after each one is scored.
 * Returns { show(postUrl, listUrl), hide() }: show() loads the results already recorded there.
 */
export function questionnairePanel(root, prefix, onResult = () => {}) {
  let postUrl = null;
  let current = null;
  const picker = element("select", { id: `${prefix}-kind` });
  picker.append(new Option("Choose a questionnaire", ""));
  const pickerError = element("p", { className: "fc-error", id: `${prefix}-kind-error` });
  picker.setAttribute("aria-describedby", pickerError.id);
  const start = element("button", { type: "button", className: "secondary", textContent: "Start" });
  const form = element("form", { className: "q-form", noValidate: true, hidden: true });
  form.setAttribute("aria-labelledby", `${prefix}-form-title`);
  const results = element("ul", { className: "q-results", id: `${prefix}-results` });
  results.setAttribute("aria-label", "Questionnaires recorded");
  const outcome = element("p", { id: `${prefix}-outcome`, tabIndex: -1 });
  outcome.setAttribute("role", "status");
  root.replaceChildren(
    element("div", { className: "q-pick" }, element("label", { htmlFor: picker.id, textContent: "Questionnaire" }), picker, start),
    pickerError, form, outcome, results,
  );

  loadDefinitions().then((list) => {
    for (const item of list) picker.add(new Option(`${item.name}: ${item.about}`, item.code));
  }).catch((exc) => { pickerError.textContent = exc.message; });

  function showResult(result) {
    const text = `${result.name}, ${when(result.at)}: ${result.score} of ${result.max_score}, ${result.band_label}`
      + (result.risk_raised ? ". Thoughts of self-harm reported" : "");
    results.prepend(element("li", { textContent: text }));
  }

  function draw(definition) {
    current = definition;
    const slots = {};
    const title = element("h4", { id: `${prefix}-form-title`, textContent: `${definition.name}: ${definition.about}`, tabIndex: -1 });
    const parts = [title, element("p", { className: "muted", textContent: definition.preamble })];
    definition.items.forEach((item, index) => {
      const error = element("p", { className: "fc-error", id: `${prefix}-${item.name}-error` });
      const fieldset = element("fieldset", { className: "fc-inner q-item" });
      fieldset.setAttribute("aria-describedby", error.id);
      fieldset.append(element("legend", { textContent: `${index + 1}. ${item.text}` }));
      for (const option of item.options) {
        const input = element("input", { type: "radio", name: item.name, value: String(option.value) });
        input.addEventListener("change", () => { error.textContent = ""; fieldset.classList.remove("invalid"); });
        fieldset.append(element("label", { className: "inline" }, input, ` ${option.label}`));
      }
      fieldset.append(error);
      slots[item.name] = { fieldset, error };
      parts.push(fieldset);
    });
    const formError = element("p", { className: "fc-error", id: `${prefix}-form-error` });
    formError.setAttribute("role", "alert");
    parts.push(element("button", { type: "submit", textContent: `Score the ${definition.name}` }), formError);
    form.replaceChildren(...parts);
    form.hidden = false;
    form.slots = slots;
    form.formError = formError;
    title.focus();
  }

  function problems(list) {
    for (const { fieldset, error } of Object.values(form.slots)) {
      error.textContent = "";
      fieldset.classList.remove("invalid");
    }
    form.formError.textContent = "";
    let first = null;
    for (const problem of list) {
      const slot = form.slots[problem.field.replace(/^answers\./, "")];
      if (slot) {
        slot.error.textContent = problem.problem;
        slot.fieldset.classList.add("invalid");
        first ||= slot.fieldset.querySelector("input");
      } else {
        form.formError.textContent = problem.problem;
      }
    }
    (first || form.formError).focus?.();
  }

  start.addEventListener("click", async () => {
    pickerError.textContent = "";
    const list = await loadDefinitions();
    const definition = list.find((item) => item.code === picker.value);
    if (!definition) {
      pickerError.textContent = "Choose a questionnaire first.";
      picker.focus();
      return;
    }
    outcome.textContent = "";
    draw(definition);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answers = {};
    const missing = [];
    current.items.forEach((item, index) => {
      const checked = form.querySelector(`input[name="${item.name}"]:checked`);
      if (checked) answers[item.name] = Number(checked.value);
      else missing.push({ field: item.name, problem: `question ${index + 1} needs an answer` });
    });
    if (missing.length) {
      problems(missing);
      return;
    }
    try {
      const result = await api("POST", postUrl, { kind: current.code, answers });
      form.hidden = true;
      form.replaceChildren();
      picker.value = "";
      showResult(result);
      outcome.textContent = `${result.name}: ${result.score} of ${result.max_score}, ${result.band_label}.`
        + (result.risk_raised ? " Thoughts of self-harm reported: supervisors have been alerted; run the risk screen now." : "");
      outcome.classList.toggle("error", result.risk_raised);
      onResult(result);
      if (!result.risk_raised) outcome.focus();
    } catch (exc) {
      if ((exc.status === 400 || exc.status === 422) && Array.isArray(exc.detail)) problems(exc.detail);
      else {
        form.formError.textContent = exc.message;
        form.formError.focus?.();
      }
    }
  });

  return {
    async show(post, listUrl) {
      postUrl = post;
      form.hidden = true;
      form.replaceChildren();
      picker.value = "";
      outcome.textContent = "";
      results.replaceChildren();
      try {
        const data = await api("GET", listUrl);
        for (const result of data.questionnaires) showResult(result);
      } catch (exc) {
        outcome.textContent = exc.message;
      }
    },
  };
}
