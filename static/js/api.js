/* Calls to Quorum's JSON API from its pages, the same on the labelling and the review page.
 *
 * QuorumApi.client(root) returns api(method, url, body), which never throws: it resolves to
 * {status, data, headers}, with status 0 when the server could not be reached.
 */
(function () {
  "use strict";

  function csrfToken(root) {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return root.dataset.csrf || (match ? decodeURIComponent(match[1]) : "");
  }

  function client(root) {
    return async function api(method, url, body) {
      const headers = { Accept: "application/json", "X-CSRFToken": csrfToken(root) };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response;
      try {
        response = await fetch(url, {
          method: method,
          headers: headers,
          credentials: "same-origin",
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        return { status: 0, data: {}, headers: new Headers() };
      }
      let data = {};
      if (response.status !== 204) {
        try {
          data = await response.json();
        } catch (e) {
          data = {};
        }
      }
      return { status: response.status, data: data, headers: response.headers };
    };
  }

  window.QuorumApi = { client: client };
})();
