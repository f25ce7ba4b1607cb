// deid-gateway workbench: the only script. Without it every page works; with it a multi-frame
// preview shows one frame at a time (previous / next / a number), every frame reachable.
"use strict";
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", () => {
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
});
