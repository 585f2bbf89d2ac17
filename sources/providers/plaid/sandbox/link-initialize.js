/* Plaid Link, sandbox imitation. Plain script, no build step, nothing loaded from elsewhere.
 *
 * window.Plaid.create({token, onSuccess, onExit, onEvent, onLoad}) returns {open, exit, destroy}.
 * open() shows a modal dialog where the person picks a sandbox institution and presses Continue;
 * the script then asks the sandbox for a public token and calls
 * onSuccess(public_token, {institution: {name, institution_id}, accounts: [...], link_session_id}).
 * Cancel (or Escape) calls onExit(null, {status: "requires_credentials", ...}).
 */
(function () {
  "use strict";

  var CONFIG = {{ config_json|safe }};
  var counter = 0;

  function sessionId() {
    return "sandbox-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") {
        node.textContent = attrs[name];
      } else if (name === "style") {
        node.style.cssText = attrs[name];
      } else {
        node.setAttribute(name, attrs[name]);
      }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function create(options) {
    options = options || {};
    var token = options.token;
    var linkSessionId = sessionId();
    var root = null;
    var previousFocus = null;
    var destroyed = false;
    var id = "plaid-sandbox-" + (++counter);

    function emit(name, metadata) {
      if (typeof options.onEvent === "function") {
        try { options.onEvent(name, metadata || {}); } catch (err) { /* the page's problem */ }
      }
    }

    function close() {
      if (root && root.parentNode) { root.parentNode.removeChild(root); }
      root = null;
      document.removeEventListener("keydown", onKeydown, true);
      if (previousFocus && typeof previousFocus.focus === "function") { previousFocus.focus(); }
    }

    function exitWith(error) {
      close();
      emit("EXIT", { link_session_id: linkSessionId });
      if (typeof options.onExit === "function") {
        options.onExit(error, {
          status: "requires_credentials",
          institution: null,
          link_session_id: linkSessionId,
          request_id: ""
        });
      }
    }

    function focusable() {
      return root ? Array.prototype.slice.call(
        root.querySelectorAll("input, button:not([disabled])")) : [];
    }

    function onKeydown(event) {
      if (!root) { return; }
      if (event.key === "Escape") {
        event.preventDefault();
        exitWith(null);
      } else if (event.key === "Tab") {
        // Keep keyboard focus inside the modal dialog.
        var items = focusable();
        if (!items.length) { return; }
        var first = items[0];
        var last = items[items.length - 1];
        if (event.shiftKey && document.activeElement === first) {
          event.preventDefault();
          last.focus();
        } else if (!event.shiftKey && document.activeElement === last) {
          event.preventDefault();
          first.focus();
        }
      }
    }

    function submit(form, status, continueButton) {
      var chosen = form.querySelector("input[name=institution]:checked");
      if (!chosen) {
        status.textContent = "Choose a bank to continue.";
        return;
      }
      continueButton.disabled = true;
      status.textContent = "Connecting…";
      emit("SUBMIT_CREDENTIALS", { institution_id: chosen.getAttribute("value"), link_session_id: linkSessionId });
      fetch(CONFIG.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ link_token: token, institution_id: chosen.getAttribute("value") })
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (result) {
        if (!result.ok) {
          continueButton.disabled = false;
          status.textContent = result.body.display_message || result.body.error_message ||
            "Something went wrong.";
          emit("ERROR", { error_code: result.body.error_code, link_session_id: linkSessionId });
          return;
        }
        var metadata = result.body.metadata || {};
        metadata.link_session_id = metadata.link_session_id || linkSessionId;
        close();
        emit("HANDOFF", { link_session_id: metadata.link_session_id });
        if (typeof options.onSuccess === "function") {
          options.onSuccess(result.body.public_token, metadata);
        }
      }).catch(function () {
        continueButton.disabled = false;
        status.textContent = "The sandbox could not be reached. Try again.";
      });
    }

    function open() {
      if (destroyed || root) { return; }
      previousFocus = document.activeElement;
      var titleId = id + "-title";
      var descriptionId = id + "-description";
      var status = el("p", { role: "status", "aria-live": "polite", style: "min-height:1.5em;color:#b3261e" });
      var choices = CONFIG.institutions.map(function (institution, index) {
        var inputId = id + "-institution-" + index;
        return el("div", { style: "margin:.5rem 0" }, [
          el("input", { type: "radio", name: "institution", id: inputId, value: institution.institution_id }),
          el("label", { "for": inputId, text: " " + institution.name, style: "margin-left:.25rem" })
        ]);
      });
      var continueButton = el("button", {
        type: "submit", text: "Continue",
        style: "padding:.5rem 1.25rem;background:#111;color:#fff;border:0;border-radius:4px;cursor:pointer"
      });
      var cancelButton = el("button", {
        type: "button", text: "Cancel",
        style: "padding:.5rem 1.25rem;background:#fff;border:1px solid #999;border-radius:4px;cursor:pointer"
      });
      var form = el("form", {}, [
        el("fieldset", { style: "border:0;padding:0;margin:1rem 0" },
          [el("legend", { text: "Choose your bank", style: "font-weight:600" })].concat(choices)),
        status,
        el("div", { style: "display:flex;gap:1rem;justify-content:flex-end" }, [cancelButton, continueButton])
      ]);
      var dialog = el("div", {
        role: "dialog", "aria-modal": "true", "aria-labelledby": titleId,
        "aria-describedby": descriptionId,
        style: "background:#fff;color:#111;max-width:24rem;width:90%;margin:10vh auto;padding:1.5rem;" +
          "border-radius:8px;font-family:system-ui,sans-serif;box-shadow:0 4px 24px rgba(0,0,0,.3)"
      }, [
        el("p", { text: "Sandbox", style: "display:inline-block;background:#fbbc04;font-weight:700;" +
          "padding:.1rem .5rem;border-radius:4px;margin:0" }),
        el("h2", { id: titleId, text: "Connect a bank account", style: "margin:.75rem 0 .25rem" }),
        el("p", { id: descriptionId, text: "This is the provider sandbox, not Plaid. " +
          "No real bank is contacted." }),
        form
      ]);
      root = el("div", {
        "data-plaid-sandbox": "link",
        style: "position:fixed;inset:0;background:rgba(0,0,0,.5);z-index:2147483647;overflow:auto"
      }, [dialog]);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        submit(form, status, continueButton);
      });
      cancelButton.addEventListener("click", function () { exitWith(null); });
      document.addEventListener("keydown", onKeydown, true);
      document.body.appendChild(root);
      emit("OPEN", { link_session_id: linkSessionId });
      var first = root.querySelector("input");
      if (first) { first.focus(); }
    }

    if (typeof options.onLoad === "function") {
      setTimeout(options.onLoad, 0);
    }

    return {
      open: open,
      exit: function () { if (root) { exitWith(null); } },
      destroy: function () { close(); destroyed = true; },
      submit: function () {}
    };
  }

  window.Plaid = { create: create, version: "sandbox" };
})();
