// n8n-relay console: the overview refreshes itself from the relay's sampled numbers.
// The fragment is server-rendered and escaped; nothing here builds markup from data.
(function () {
  'use strict';
  var live = document.getElementById('live');
  if (!live) return;
  var url = live.getAttribute('data-refresh');
  setInterval(function () {
    if (document.hidden) return;
    fetch(url, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var doc = new DOMParser().parseFromString(html, 'text/html');
        live.replaceChildren.apply(live, Array.prototype.slice.call(doc.body.childNodes));
      })
      .catch(function () {});
  }, 5000);
})();
