// deid-gateway workbench: the only script. Without it every page works (Check and Save post
// the form). With it: the editor is checked as you type, and a multi-frame preview shows one
// frame at a time (previous / next / a number), every frame reachable.
"use strict";
document.documentElement.classList.add("js");

function frames() {
  const nav = document.querySelector(".frame-nav");
  if (!nav) return;
  const count = Number(nav.dataset.frames);
  const input = nav.querySelector("input");
  const show = (n) => {
    const shown = Math.min(Math.max(1, n), count);
    input.value = String(shown);
    document.querySelectorAll("section.frame").forEach((s, i) => {
      s.classList.toggle("hidden", i + 1 !== shown);
    });
  };
  nav.querySelectorAll("button[data-step]").forEach((b) => {
    b.addEventListener("click", () => show(Number(input.value) + Number(b.dataset.step)));
  });
  input.addEventListener("change", () => show(Number(input.value)));
  show(1);
}

function editor() {
  const form = document.getElementById("editor");
  const live = document.getElementById("live-problems");
  if (!form || !live) return;
  const area = form.querySelector("textarea");
  let timer = 0;
  const report = (answer) => {
    // what the server said about the text as it was loaded no longer holds
    document.querySelectorAll("#valid, #problems").forEach((e) => { e.hidden = true; });
    live.replaceChildren();
    const head = document.createElement("p");
    if (!answer.problems.length) {
      head.className = "ok";
      head.textContent = "As typed: no problems (hash " + answer.hash + ").";
      live.append(head);
      return;
    }
    head.className = "error";
    head.textContent = "As typed: " + answer.problems.length + " problem(s)";
    const list = document.createElement("ul");
    for (const p of answer.problems) {
      const item = document.createElement("li");
      item.className = "error";
      item.dataset.line = p.line || "";
      item.textContent = (p.line ? "line " + p.line + ": " : "") + p.where + ": " + p.message;
      list.append(item);
    }
    live.append(head, list);
  };
  const check = () => {
    const body = new FormData();
    body.append("csrf", form.querySelector("input[name=csrf]").value);
    body.append("text", area.value);
    fetch(form.dataset.check, { method: "POST", body, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((answer) => answer && report(answer))
      .catch(() => {});
  };
  area.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  frames();
  editor();
});
