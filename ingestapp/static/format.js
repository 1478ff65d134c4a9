/* ingestapp: how numbers, times, sizes and cameras read on every page (the server's template
 * filters in web/pages.py format the same way). */
'use strict';

(function () {
  const I = window.Ingest;
  const pad = (n) => String(n).padStart(2, '0');

  /** m:ss or h:mm:ss, like the server's "duration" filter. */
  function duration(ms) {
    if (ms === null || ms === undefined) return '—';
    const total = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  /** One decimal, rounded down: only a finished session reads 100%. */
  function percent(value) {
    if (value === null || value === undefined) return '—';
    if (value >= 100) return '100%';
    return (Math.floor(value * 10) / 10).toFixed(1) + '%';
  }

  /** HH:MM:SS in the browser's time zone (unix seconds in). */
  function clock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** YYYY-MM-DD HH:MM in the browser's time zone, like the server's "datetime" filter; — for none. */
  function when(unixSeconds) {
    if (!unixSeconds) return '—';
    const d = new Date(unixSeconds * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  /** Like Jinja's filesizeformat(binary=True): "532 Bytes", "1.2 MiB". */
  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['Bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  /** "Canon" + "Canon EOS R6" → "Canon EOS R6" (like the server's "camera" filter). */
  function camera(make, model) {
    if (!make || !model) return make || model;
    const brand = make.split(' ')[0].toLowerCase();
    return model.toLowerCase().startsWith(brand) ? model : `${make} ${model}`;
  }

  /** "2023-12-28T19:42:10-03:00" → "2023-12-28 19:42" (the camera's local time, as recorded). */
  function taken(iso) {
    return String(iso).replace('T', ' ').slice(0, 16);
  }

  /** Width × height as the picture is displayed: EXIF orientations 5–8 turn it a quarter, so
   * they swap the stored sizes (CIPA DC-008, Exif 2.32 §4.6.4 A "Orientation"). null without sizes. */
  function pixels(item, separator) {
    if (!item.width) return null;
    const turned = ((item.metadata || {}).orientation || 1) >= 5;
    const [w, h] = turned ? [item.height, item.width] : [item.width, item.height];
    return `${w}${separator || '×'}${h}`;
  }

  Object.assign(I, { duration, percent, clock, when, bytes, camera, taken, pixels });
})();
