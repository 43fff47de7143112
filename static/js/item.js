/* How an item's payload is drawn, the same on the labelling page and the expert's review page.
 *
 * Text is only ever set with textContent, and images only from data:/http(s) image URLs that
 * match the server's pattern, so nothing in an item can become markup.
 */
(function () {
  "use strict";


  function isImage(value, imagePattern) {
    return typeof value === "string" && imagePattern.test(value);
  }

  function textOf(value) {
    if (typeof value === "string") return value;
    if (value !== null && typeof value === "object") return JSON.stringify(value, null, 2);
    return String(value);
  }

  function imageField(name, url) {
    const figure = document.createElement("figure");
    figure.className = "label-image";
    const img = document.createElement("img");
    img.alt = name;
    img.decoding = "async";
    // Tiny scans (8×8 digits, 32×32 thumbnails) are drawn large, with crisp square pixels.
    img.addEventListener("load", () => {
      if (img.naturalWidth <= 128 && img.naturalHeight <= 128) figure.classList.add("tiny");
    });
    img.addEventListener("error", () => {
      const missing = document.createElement("p");
      missing.className = "error";
      missing.textContent = "The image “" + name + "” could not be loaded.";
      figure.replaceChildren(missing);
    });
    img.src = url;
    figure.append(img);
    return figure;
  }

  function textField(name, value) {
    const box = document.createElement("div");
    box.className = "label-field";
    const title = document.createElement("div");
    title.className = "label-field-name";
    title.textContent = name;
    const body = document.createElement("div");
    body.className = "label-field-value";
    body.textContent = textOf(value);
    box.append(title, body);
    return box;
  }

  // Images first, then texts (stored payloads do not keep their key order); exactly two texts
  // (or two images) sit side by side as a pair, to be compared.
  function render(payload, imagePattern, emptyText) {
    const all = Object.entries(payload || {});
    const pictures = all.filter(([, v]) => isImage(v, imagePattern));
    const entries = pictures.concat(all.filter(([, v]) => !isImage(v, imagePattern)));
    const images = pictures.length;
    const texts = entries.length - images;
    const wrap = document.createElement("div");
    wrap.className = "label-item";
    const pairs = {};
    for (const [name, value] of entries) {
      const image = isImage(value, imagePattern);
      const field = image ? imageField(name, value) : textField(name, value);
      const kind = image ? "image" : "text";
      if ((image ? images : texts) !== 2) {
        wrap.append(field);
        continue;
      }
      if (!pairs[kind]) {
        pairs[kind] = document.createElement("div");
        pairs[kind].className = "label-pair";
        wrap.append(pairs[kind]);
      }
      pairs[kind].append(field);
    }
    if (!entries.length) {
      const none = document.createElement("p");
      none.className = "label-loading";
      none.textContent = emptyText;
      wrap.append(none);
    }
    return wrap;
  }

  window.QuorumItem = { render: render };
})();
