// /api/docs: start Swagger UI on the contract named by the page (no inline script: the page's CSP
// allows only same-origin script files).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // never send the document to validator.swagger.io
    presets: [window.SwaggerUIBundle.presets.apis],
  });
});
