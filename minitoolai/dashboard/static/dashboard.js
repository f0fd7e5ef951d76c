/* MiniToolAI dashboard: small progressive enhancements and the playground. Plain JS, no
   build step. Every POST carries the session's CSRF token. */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }

  // copy buttons: <button data-copy="input-id">
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var input = $(btn.getAttribute("data-copy"));
      input.select();
      var done = function () { btn.textContent = "Copied"; };
      if (navigator.clipboard) { navigator.clipboard.writeText(input.value).then(done, done); }
      else { document.execCommand("copy"); done(); }
    });
  });

  // on a phone the menus scroll sideways: keep the current page's entry in sight
  document.querySelectorAll(".nav, .subnav").forEach(function (menu) {
    var on = menu.querySelector("a.on");
    if (on && menu.scrollWidth > menu.clientWidth) {
      menu.scrollLeft = on.offsetLeft - menu.offsetLeft - 24;
    }
  });

  // a box that scrolls sideways (a wide table on a phone) must be reachable by keyboard to
  // be scrolled without a mouse (WCAG 2.1.1)
  document.querySelectorAll(".table-wrap").forEach(function (box) {
    if (box.scrollWidth > box.clientWidth && !box.hasAttribute("tabindex")) { box.tabIndex = 0; }
  });

  // forms that ask first: <form data-confirm="...">
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // tabs (the playground's, the API docs' examples), as the WAI-ARIA tabs pattern has them:
  // <div role="tablist"><button role="tab" aria-controls="panel-id">; the selected tab alone
  // is in the Tab order (roving tabindex); the arrow keys, Home and End select another
  document.querySelectorAll("[role=tablist]").forEach(function (list) {
    var tabs = Array.prototype.slice.call(list.querySelectorAll("[role=tab]"));
    function select(tab, focus) {
      tabs.forEach(function (other) {
        var on = other === tab;
        other.classList.toggle("on", on);
        other.setAttribute("aria-selected", on ? "true" : "false");
        other.tabIndex = on ? 0 : -1;
        $(other.getAttribute("aria-controls")).hidden = !on;
      });
      if (focus) { tab.focus(); }
    }
    tabs.forEach(function (tab, i) {
      tab.addEventListener("click", function () { select(tab, false); });
      tab.addEventListener("keydown", function (event) {
        var next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
        if (next === undefined) { return; }
        event.preventDefault();
        select(tabs[(next + tabs.length) % tabs.length], true);
      });
    });
  });

  var pg = $("pg");
  if (!pg) { return; }
  var csrf = pg.getAttribute("data-csrf");

  // money as the server sends it, exact: a string ("0.000123") or the API's JSON number
  function usd(value) {
    var text = typeof value === "number" ? value.toFixed(9) : String(value);
    var parts = text.split(".");
    var frac = (parts[1] || "").replace(/0+$/, "");
    while (frac.length < 2) { frac += "0"; }
    return "$" + parts[0] + "." + frac;
  }

  // what a finished request was charged, from its usage row (written when the ledger
  // settled it): asked again for a while, as a stopped chat settles a moment later
  function charged(requestId, tries) {
    return fetch("/playground/charge?request_id=" + encodeURIComponent(requestId),
                 { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        if (answer.settled || tries <= 1) { return answer; }
        return new Promise(function (resolve) { setTimeout(resolve, 500); })
          .then(function () { return charged(requestId, tries - 1); });
      });
  }

  function post(url, body, signal) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", signal: signal,
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    });
  }

  function errorOf(response) {
    return response.text().then(function (text) {
      try {
        var data = JSON.parse(text);
        if (data.error && data.error.message) { return data.error.message; }
        if (data.message) { return data.message; }
      } catch (e) { /* not JSON: fall through to the status line */ }
      return "HTTP " + response.status + " " + response.statusText;
    });
  }

  function bubble(log, role, text) {
    var div = document.createElement("div");
    div.className = "msg " + role;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  // ---- chat ---------------------------------------------------------------------------
  var chatForm = $("chat-form");
  if (chatForm) {
    var history = [];
    var log = $("chat-log");
    $("chat-clear").addEventListener("click", function () { history = []; log.textContent = ""; });
    $("chat-input").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { chatForm.requestSubmit(); }
    });
    var stop = $("chat-stop");
    var inFlight = null;  // the AbortController of the stream being read
    stop.addEventListener("click", function () { if (inFlight) { inFlight.abort(); } });
    chatForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (inFlight) { return; }
      var input = $("chat-input");
      var text = input.value.trim();
      if (!text) { return; }
      input.value = "";
      history.push({ role: "user", content: text });
      bubble(log, "user", text);
      var out = bubble(log, "assistant", "");
      var send = $("chat-send");
      send.disabled = true;
      $("chat-status").textContent = "Thinking…";
      var messages = [];
      var system = $("chat-system").value.trim();
      if (system) { messages.push({ role: "developer", content: system }); }
      var body = {
        model: $("chat-model").value, messages: messages.concat(history), stream: true,
        temperature: parseFloat($("chat-temperature").value || "1"),
        max_completion_tokens: parseInt($("chat-max").value || "500", 10)
      };
      var answer = "";
      var usage = null;
      var requestId = null;
      var controller = new AbortController();
      inFlight = controller;
      stop.hidden = false;
      post("/playground/chat", body, controller.signal).then(function (response) {
        requestId = response.headers.get("x-request-id");
        if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function handle(line) {
          if (line.indexOf("data:") !== 0) { return; }
          var data = line.slice(5).trim();
          if (!data || data === "[DONE]") { return; }
          var chunk = JSON.parse(data);
          if (chunk.error) { throw new Error(chunk.error.message || "the stream failed"); }
          if (chunk.choices && chunk.choices.length && chunk.choices[0].delta &&
              chunk.choices[0].delta.content) {
            answer += chunk.choices[0].delta.content;
            out.textContent = answer;
            log.scrollTop = log.scrollHeight;
          }
          if (chunk.usage) { usage = chunk.usage; }
        }
        function pump() {
          return reader.read().then(function (step) {
            if (step.done) { return; }
            buffer += decoder.decode(step.value, { stream: true });
            var lines = buffer.split("\n");
            buffer = lines.pop();
            lines.forEach(handle);
            return pump();
          });
        }
        return pump().then(function () { if (buffer) { handle(buffer); } });
      }).then(function () {
        history.push({ role: "assistant", content: answer });
        if (usage) {
          var meta = document.createElement("span");
          meta.className = "meta";
          meta.textContent = usage.prompt_tokens + " in / " + usage.completion_tokens +
            " out tokens" + (usage.cost !== undefined ? " · charged " + usd(usage.cost) : "");
          out.appendChild(meta);
        }
        $("chat-status").textContent = "";
      }).catch(function (error) {
        if (error.name !== "AbortError") {
          history.pop();
          out.className = "msg error";
          out.textContent = error.message;
          $("chat-status").textContent = "";
          return;
        }
        // stopped: keep what came, say so, then show what the stopped request cost
        history.push({ role: "assistant", content: answer });
        out.classList.add("stopped");
        var note = document.createElement("span");
        note.className = "meta";
        note.textContent = "Stopped.";
        out.appendChild(note);
        $("chat-status").textContent = "Stopped.";
        if (!requestId) { return; }
        charged(requestId, 60).then(function (answer) {
          note.textContent = answer.settled ? "Stopped · charged " + usd(answer.cost)
            : "Stopped · the charge is not settled yet: see Usage";
        }).catch(function () { /* the usage page has it */ });
      }).then(function () {
        send.disabled = false;
        stop.hidden = true;
        inFlight = null;
      });
    });
  }

  // ---- image --------------------------------------------------------------------------
  var imageForm = $("image-form");
  if (imageForm) {
    imageForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = $("image-status");
      var result = $("image-result");
      var send = $("image-send");
      var cost = $("image-cost");
      var requestId = null;
      cost.hidden = true;
      result.textContent = "";
      send.disabled = true;
      status.textContent = "Submitting…";
      var body = {
        model: $("image-model").value, prompt: $("image-prompt").value,
        negativePrompt: $("image-negative").value || null,
        steps: parseInt($("image-steps").value, 10),
        width: parseInt($("image-width").value, 10), height: parseInt($("image-height").value, 10)
      };
      function fail(message) {
        status.textContent = "";
        result.textContent = message;
        result.className = "image-result error-text";
        cost.textContent = "Nothing was charged.";
        cost.hidden = false;
        send.disabled = false;
      }
      post("/playground/image", body).then(function (response) {
        requestId = response.headers.get("x-request-id");
        if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
        return response.json();
      }).then(function (ticket) {
        var tries = 0;
        function poll() {
          fetch("/api/texttoimage/jobs/", {
            method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ jobid: ticket.jobid, signature: ticket.signature })
          }).then(function (r) { return r.json(); }).then(function (job) {
            if (job.status === "success" && job.image_url) {
              var img = document.createElement("img");
              img.alt = body.prompt;
              img.src = job.image_url;
              result.className = "image-result";
              result.appendChild(img);
              status.textContent = "Done.";
              send.disabled = false;
              if (requestId) {
                charged(requestId, 10).then(function (answer) {
                  if (!answer.settled) { return; }
                  cost.textContent = "Charged " + usd(answer.cost) + ".";
                  cost.hidden = false;
                });
              }
            } else if (job.status === "error") {
              fail(job.message || "the job failed");
            } else {
              status.textContent = job.message || job.status;
              tries += 1;
              setTimeout(poll, tries < 10 ? 700 : 2000);
            }
          }).catch(function (e) { fail(e.message); });
        }
        poll();
      }).catch(function (error) { fail(error.message); });
    });
  }

  // ---- speech -------------------------------------------------------------------------
  var speechForm = $("speech-form");
  if (speechForm) {
    var modelSelect = $("speech-model");
    var voiceSelect = $("speech-voice");
    var fillVoices = function () {
      var option = modelSelect.options[modelSelect.selectedIndex];
      var voices = JSON.parse(option.getAttribute("data-voices") || "[]");
      voiceSelect.textContent = "";
      voices.forEach(function (v) {
        var o = document.createElement("option");
        o.value = o.textContent = v;
        o.selected = v === option.getAttribute("data-default");
        voiceSelect.appendChild(o);
      });
    };
    modelSelect.addEventListener("change", fillVoices);
    fillVoices();
    speechForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = $("speech-status");
      var audio = $("speech-audio");
      var send = $("speech-send");
      var cost = $("speech-cost");
      cost.hidden = true;
      send.disabled = true;
      status.textContent = "Synthesising…";
      var body = { model: modelSelect.value, input: $("speech-input").value,
                   format: modelSelect.getAttribute("data-format") };
      if (voiceSelect.value) { body.voice = voiceSelect.value; }
      post("/playground/speech", body).then(function (response) {
        if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
        // the price of the whole text, charged once all the audio has been sent
        var price = response.headers.get("x-cost-usd");
        var characters = response.headers.get("x-characters");
        return response.blob().then(function (blob) {
          if (price) {
            cost.textContent = "Charged " + usd(price) + " (" + characters + " characters).";
            cost.hidden = false;
          }
          return blob;
        });
      }).then(function (blob) {
        audio.src = URL.createObjectURL(blob);
        audio.hidden = false;
        status.textContent = "";
        audio.play().catch(function () { /* autoplay refused: the controls are there */ });
      }).catch(function (error) { status.textContent = error.message; })
        .then(function () { send.disabled = false; });
    });
  }
})();
