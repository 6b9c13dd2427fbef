// The Bursar console's one script (served from the binary; the CSP allows no other): the
// approvals queue refreshes itself without a page reload.
(function () {
  var queue = document.querySelector('#queue tbody');
  if (!queue) return;
  var last = null;
  setInterval(function () {
    fetch('/console/approvals/rows', { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        // Replace the rows only when they changed, so a button is never swapped under a click.
        if (html === null || html === last) return;
        var active = document.activeElement;
        if (active && queue.contains(active) && active.tagName === 'INPUT') return;
        last = html;
        queue.innerHTML = html;
      })
      .catch(function () {});
  }, 3000);
})();
