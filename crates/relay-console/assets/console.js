// n8n-relay console: the overview refreshes itself from the relay's sampled numbers.
// The fragment is server-rendered and escaped; nothing here builds markup from data.
(function () {
  'use strict';
  // An action that cannot be undone asks first; the form's data-confirm says what it
  // does (server-rendered text, shown by the browser's own dialog).
  Array.prototype.forEach.call(document.querySelectorAll('form[data-confirm]'), function (form) {
    form.addEventListener('submit', function (e) {
      if (!window.confirm(form.getAttribute('data-confirm'))) e.preventDefault();
    });
  });
  var live = document.getElementById('live');
  if (!live) return;
  var url = live.getAttribute('data-refresh');
  setInterval(function () {
    if (document.hidden) return;
    // A redirect (to the login page) or a refusal means the session has ended (logged
    // out elsewhere, expired, the relay restarted): the whole page is loaded again, so
    // it shows the login instead of a stale overview whose forms would all fail, and
    // the login page is never put inside the overview.
    fetch(url, { credentials: 'same-origin', cache: 'no-store', redirect: 'manual' })
      .then(function (r) {
        if (r.type === 'opaqueredirect' || r.status === 401 || r.status === 403) {
          window.location.reload();
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var doc = new DOMParser().parseFromString(html, 'text/html');
        live.replaceChildren.apply(live, Array.prototype.slice.call(doc.body.childNodes));
      })
      .catch(function () {});
  }, 5000);
})();
