/* ingestapp: the page namespace (window.Ingest) and DOM helpers every page uses.
 * Server data only ever reaches the DOM through textContent and setAttribute, never innerHTML.
 * Load order (base.html): dom.js, format.js, net.js, cards.js, dialog.js, then the page's script. */
'use strict';

(function () {
  /** Build an element: attrs.text → textContent, attrs.class → className, other attrs → attributes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Set textContent only when it changes; true when it did. */
  function setText(node, value) {
    const text = String(value);
    if (node.textContent === text) return false;
    node.textContent = text;
    return true;
  }

  /** Show or hide a node, touching it only on a change (a write, even of the same value, can
   * invalidate its style: the live view renders up to once a frame). */
  function setHidden(node, hidden) {
    if (node.hidden !== hidden) node.hidden = hidden;
  }

  /** Restart a short CSS highlight (two identical keyframe sets, so no reflow is needed). */
  function flash(node, attr) {
    node.setAttribute(attr, node.getAttribute(attr) === 'a' ? 'b' : 'a');
  }

  /** While the server is unreachable, disable every control that needs it (class needs-server);
   * give back only what this disabled. */
  function setOffline(offline) {
    if (document.documentElement.hasAttribute('data-offline') === offline) return;
    document.documentElement.toggleAttribute('data-offline', offline);
    for (const node of document.querySelectorAll('.needs-server')) {
      if (offline && !node.disabled) {
        node.disabled = true;
        node.dataset.offlineDisabled = '';
      } else if (!offline && 'offlineDisabled' in node.dataset) {
        node.disabled = false;
        delete node.dataset.offlineDisabled;
      }
    }
  }

  /** Server-rendered bars get their fill from data-p (no style attribute: the CSP forbids it). */
  function fillBars(root) {
    for (const fill of (root || document).querySelectorAll('.bar-fill[data-p]')) {
      fill.style.setProperty('--p', fill.dataset.p);
    }
  }
  document.addEventListener('DOMContentLoaded', () => fillBars());

  /** Statuses, event types, stage names, option flags and labels (ingestapp/core/vocabulary.py,
   * for_scripts): each enum by name, e.g. vocabulary.session_status.INTERRUPTED. */
  const vocabulary = JSON.parse(document.getElementById('vocabulary').textContent);

  window.Ingest = { el, setText, setHidden, flash, setOffline, fillBars, vocabulary };
})();
