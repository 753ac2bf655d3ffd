// Starts Swagger UI on this service's OpenAPI document. A file of its own rather than an inline
// script, so that the page's Content-Security-Policy can refuse every inline script.
window.ui = SwaggerUIBundle({
  // Relative to the page (.../workflows/docs), so it holds wherever the API is mounted.
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // Swagger UI would otherwise show a badge fetched from a public validator: the page asks
  // nothing of any host but this service.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
