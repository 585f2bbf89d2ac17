// The browser's time zone (an IANA name such as "Europe/Paris"), for the forms that ask for it:
// every input marked data-browser-time-zone gets it as its value (sign-up's hidden field), and
// every button marked data-browser-time-zone-for="<select id>" is shown and, when pressed,
// selects it in that list (the settings page). A static file, as the Content-Security-Policy
// allows no inline script.
(function () {
  "use strict";
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (error) {
    return;
  }
  if (!zone) {
    return;
  }
  document.querySelectorAll("input[data-browser-time-zone]").forEach(function (input) {
    input.value = zone;
  });
  document.querySelectorAll("button[data-browser-time-zone-for]").forEach(function (button) {
    var select = document.getElementById(button.getAttribute("data-browser-time-zone-for"));
    var known = select && Array.prototype.some.call(select.options, function (option) {
      return option.value === zone;
    });
    if (!known) {
      return;
    }
    button.textContent = button.textContent + " (" + zone + ")";
    button.hidden = false;
    button.addEventListener("click", function () {
      select.value = zone;
      select.focus();
    });
  });
})();
