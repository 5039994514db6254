// Starts Swagger UI on Gatehouse's own OpenAPI document. Kept out of
// index.html so the page's CSP needs no 'unsafe-inline' for scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#docs",
    deepLinking: true,
    // No validator badge: it would call an outside service.
    validatorUrl: null,
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
