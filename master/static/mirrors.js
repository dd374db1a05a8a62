// The visitors' page: filter the list as one types. Without script, the form's ?q= does the same on the server.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var input = document.getElementById("mirror-search");
  var count = document.getElementById("mirror-count");
  var none = document.getElementById("mirror-none");
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.mirrors tbody tr"));
  if (!input || !rows.length) {
    return;
  }

  function filter() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search") || "";
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      row.hidden = !match;
      if (match) {
        shown += 1;
      }
    });
    count.textContent = words.length
      ? shown + " of " + rows.length + " mirrors match \u201c" + input.value.trim() + "\u201d"
      : rows.length + " mirrors";
    if (none) {
      none.hidden = shown !== 0;
    }
    var url = new URL(window.location.href);
    if (words.length) {
      url.searchParams.set("q", input.value.trim());
    } else {
      url.searchParams.delete("q");
    }
    window.history.replaceState(null, "", url.toString());
  }

  input.addEventListener("input", filter);
});
