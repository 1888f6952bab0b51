// aigc's web page: chat, images, speech, the log and what a file records, over this server's own API.
// Plain JavaScript, no build step, no other host: every request goes to the page's own origin.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY = 'aigc.apiKey';
const RECORD_FIELDS = {
  image: ['prompt', 'negative', 'model', 'seed', 'width', 'height', 'steps', 'guidance', 'sampler', 'strength',
    'init_image', 'mask', 'lora', 'vae', 'device', 'dtype', 'backend', 'seconds', 'aigc_version'],
  speech: ['text', 'model', 'voice', 'speed', 'seed', 'sample_rate', 'duration', 'sentence_silence', 'device',
    'dtype', 'aigc_version'],
  text: ['model', 'seed', 'temperature', 'top_k', 'top_p', 'max_new_tokens', 'finish_reason', 'prompt_tokens',
    'completion_tokens', 'tokens_per_second', 'backend', 'device', 'dtype'],
};
const RERUN_FLAGS = {
  text: ['max_tokens', 'temperature', 'top_k', 'top_p', 'repetition_penalty', 'stop', 'seed'],
  image: ['negative', 'steps', 'guidance', 'width', 'height', 'scheduler', 'strength', 'seed', 'lora', 'vae'],
  speech: ['voice', 'speed', 'sentence_silence', 'seed'],
};

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// --- the API: the key, errors as the one line the API gives, server-sent events ---------------------------

function headers(extra) {
  const out = { ...(extra || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.headers) });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError('The server does not answer: is aigc serve still running?', 0);
  }
  if (response.ok) return response;
  let message = `HTTP ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: the status line */ }
  if (response.status === 401) askForKey(message);
  throw new ApiError(message, response.status);
}

function post(path, body, options = {}) {
  return api(path, {
    ...options,
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(options.headers || {}) },
    body: JSON.stringify(body),
  });
}

async function getJson(path) {
  return (await api(path)).json();
}

// The events of a text/event-stream body; an error event (OpenAI's error JSON) is thrown as an ApiError.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart())
        .join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(event.error.message || 'The server failed', 500);
      yield event;
    }
  }
}

function showError(panel, error) {
  const line = $(`${panel}-error`);
  if (!error) {
    line.textContent = '';
    return;
  }
  line.textContent = error.name === 'AbortError' ? '' : error.message;
}

function askForKey(message) {
  const form = $('key-form');
  const wasHidden = form.hidden;
  form.hidden = false;
  $('key-error').textContent = message;
  if (wasHidden) $('key').focus();
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $('key').value);
  $('key').value = '';
  $('key-error').textContent = '';
  $('key-form').hidden = true;
  start();
});

// --- tabs -------------------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(name, focus) {
  for (const tab of tabs) {
    const on = tab.getAttribute('aria-controls') === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === 'history') loadHistory(true);
}

for (const tab of tabs) {
  tab.addEventListener('click', () => selectTab(tab.getAttribute('aria-controls'), false));
  tab.addEventListener('keydown', (event) => {
    const at = tabs.indexOf(tab);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    selectTab(tabs[(to + tabs.length) % tabs.length].getAttribute('aria-controls'), true);
  });
}

// --- small helpers ----------------------------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function shown(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function recordList(record, fields) {
  const list = element('dl', { class: 'record' });
  const names = fields || Object.keys(record);
  for (const name of names) {
    if (!(name in record) || record[name] === null || record[name] === '' || record[name] === undefined) continue;
    list.append(element('dt', { text: name }), element('dd', { text: shown(record[name]) }));
  }
  return list;
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === '' ? null : Number(text);
}

function setValue(id, value) {
  $(id).value = value === null || value === undefined ? '' : value;
}

// Select model `name`: an option of that id, else a local folder of that name (records name a local model by
// its folder's name, not its path), else a new option.
function setModel(select, name) {
  if (!name) return;
  const options = [...select.options];
  const found = options.find((o) => o.value === name) || options.find((o) => o.value.endsWith(`/${name}`));
  if (!found) select.append(element('option', { value: name, text: name }));
  select.value = found ? found.value : name;
}

function bytesOf(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(`${file.name} cannot be read`, 0));
    reader.readAsDataURL(file);
  });
}

const base64Of = (dataUrl) => dataUrl.slice(dataUrl.indexOf(',') + 1);

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function busy(go, stop, on) {
  $(go).disabled = on;
  if (stop) $(stop).disabled = !on;
}

function pick(flags, names) {
  const out = {};
  for (const name of names) if (flags[name] !== null && flags[name] !== undefined) out[name] = flags[name];
  return out;
}

// --- models, schedulers, voices ---------------------------------------------------------------------------

async function start() {
  let models;
  try {
    models = (await getJson('/v1/models')).data;
  } catch (error) {
    if (error.status !== 401) showError('chat', error);
    return;
  }
  for (const modality of ['text', 'image', 'speech']) {
    const select = $(`${{ text: 'chat', image: 'image', speech: 'speech' }[modality]}-model`);
    const was = select.value;
    select.replaceChildren(...models.filter((m) => m.modality === modality)
      .map((m) => element('option', { value: m.id, text: m.loaded ? `${m.id} (loaded)` : m.id })));
    if (was) setModel(select, was);
  }
  try {
    const samplers = await getJson('/sdapi/v1/samplers');
    $('image-scheduler').replaceChildren(element('option', { value: '', text: "model's" }),
      ...samplers.map((s) => element('option', { value: s.aliases[0], text: s.name })));
  } catch (error) { showError('image', error); }
  await loadVoices();
}

async function loadVoices(wanted) {
  const model = $('speech-model').value;
  if (!model) return;
  try {
    const answer = await getJson(`/v1/audio/voices?model=${encodeURIComponent(model)}`);
    const voices = answer.data.map((v) => v.id);
    $('speech-voice').replaceChildren(...voices.map((v) => element('option', { value: v, text: v })));
    if (wanted) setModel($('speech-voice'), wanted);
  } catch (error) { showError('speech', error); }
}

$('speech-model').addEventListener('change', () => loadVoices());

// --- chat -------------------------------------------------------------------------------------------------

const chat = { turns: [], conversation: randomId(), controller: null, extra: {} };

function chatItem(role, text) {
  const content = element('span', { class: 'content', text });
  const item = element('li', { class: role }, element('span', { class: 'who', text: role === 'user' ? 'You' : 'Reply' }),
    content);
  $('chat-log').append(item);
  return item;
}

function newConversation() {
  chat.turns = [];
  chat.conversation = randomId();
  chat.extra = {};
  $('chat-log').replaceChildren();
  showError('chat', null);
}

$('chat-new').addEventListener('click', () => {
  newConversation();
  $('chat-prompt').focus();
});
$('chat-stop').addEventListener('click', () => chat.controller && chat.controller.abort());
$('chat-prompt').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('chat-send').requestSubmit();
  }
});
$('chat-send').addEventListener('submit', (event) => {
  event.preventDefault();
  sendChat();
});

async function sendChat() {
  const prompt = $('chat-prompt').value;
  if (!prompt.trim() || chat.controller) return;
  showError('chat', null);
  const system = $('chat-system').value.trim();
  const messages = [...(system ? [{ role: 'system', content: system }] : []), ...chat.turns,
    { role: 'user', content: prompt }];
  const settings = { max_tokens: numberOrNull('chat-max-tokens'), temperature: numberOrNull('chat-temperature'),
    seed: numberOrNull('chat-seed') };
  const body = { model: $('chat-model').value || undefined, messages, stream: true, ...chat.extra, ...pick(settings, Object.keys(settings)) };
  chat.extra = {};
  const mine = chatItem('user', prompt);
  const reply = chatItem('assistant', '');
  const content = reply.querySelector('.content');
  $('chat-log').setAttribute('aria-busy', 'true');
  $('chat-prompt').value = '';
  chat.controller = new AbortController();
  busy('chat-go', 'chat-stop', true);
  let record = null;
  try {
    const response = await post('/v1/chat/completions', body, {
      signal: chat.controller.signal, headers: { 'X-Aigc-Conversation': chat.conversation } });
    for await (const event of events(response)) {
      for (const choice of event.choices || []) {
        if (choice.delta && choice.delta.content) content.textContent += choice.delta.content;
        if (choice.aigc) record = choice.aigc;
      }
    }
    chat.turns.push({ role: 'user', content: prompt }, { role: 'assistant', content: content.textContent });
  } catch (error) {
    if (error.name === 'AbortError') {
      chat.turns.push({ role: 'user', content: prompt }, { role: 'assistant', content: content.textContent });
      reply.append(element('span', { class: 'who', text: '(stopped)' }));
    } else {
      mine.remove();
      reply.remove();
      $('chat-prompt').value = prompt;
      showError('chat', error);
    }
  } finally {
    chat.controller = null;
    busy('chat-go', 'chat-stop', false);
    $('chat-log').setAttribute('aria-busy', 'false');
  }
  if (record) {
    reply.dataset.seed = shown(record.seed);
    reply.append(element('details', { class: 'record' }, element('summary', { text: 'How this was made' }),
      recordList(record, RECORD_FIELDS.text)));
  }
}

// --- images -----------------------------------------------------------------------------------------------

const imaging = { controller: null, extra: {}, mask: null, maskDirty: false };

$('image-random').addEventListener('change', () => {
  if ($('image-random').checked) $('image-seed').value = '';
});
$('image-seed').addEventListener('input', () => {
  $('image-random').checked = $('image-seed').value === '';
});
$('image-stop').addEventListener('click', () => imaging.controller && imaging.controller.abort());
$('image-form').addEventListener('submit', (event) => {
  event.preventDefault();
  makeImages();
});

// [route, body, headers] of the image request the form describes.
async function imageRequest() {
  const body = {
    model: $('image-model').value || undefined,
    prompt: $('image-prompt').value,
    n: numberOrNull('image-count') || 1,
    stream: true,
    partial_images: 3,
    progress: true,
    response_format: 'b64_json',
    ...imaging.extra,
  };
  const settings = {
    negative: $('image-negative').value.trim() || null,
    width: numberOrNull('image-width'),
    height: numberOrNull('image-height'),
    steps: numberOrNull('image-steps'),
    guidance: numberOrNull('image-guidance'),
    scheduler: $('image-scheduler').value || null,
    seed: $('image-random').checked ? null : numberOrNull('image-seed'),
  };
  Object.assign(body, pick(settings, Object.keys(settings)));
  const init = $('image-init').files[0];
  if (!init) return ['/v1/images/generations', JSON.stringify(body), { 'Content-Type': 'application/json' }];
  // From an image: OpenAI's edits route (multipart), which also takes a painted mask in OpenAI's form.
  const strength = numberOrNull('image-strength');
  if (strength !== null) body.strength = strength;
  const form = new FormData();
  for (const [name, value] of Object.entries(body)) {
    if (value !== undefined && value !== null) form.append(name, Array.isArray(value) ? value.join(',') : String(value));
  }
  form.append('image', init, init.name);
  const mask = $('image-mask').files[0];
  if (mask) form.append('mask', mask, mask.name);
  else if (imaging.maskDirty) form.append('mask', await maskPng(), 'mask.png');
  return ['/v1/images/edits', form, {}];
}

async function makeImages() {
  if (imaging.controller) return;
  showError('image', null);
  const preview = $('image-preview');
  preview.hidden = true;
  preview.dataset.previews = '0';
  $('image-progress-area').hidden = false;
  $('image-progress').value = 0;
  $('image-progress-text').textContent = 'Starting…';
  imaging.controller = new AbortController();
  busy('image-go', 'image-stop', true);
  let made = 0;
  try {
    const count = numberOrNull('image-count') || 1;
    const [path, body, type] = await imageRequest();
    imaging.extra = {};
    const response = await api(path, { method: 'POST', body, headers: type, signal: imaging.controller.signal });
    for await (const event of events(response)) {
      if (event.type === 'aigc.image.step') {
        const done = (event.index * event.total + event.step) / (count * event.total);
        $('image-progress').value = done;
        $('image-progress-text').textContent = `Image ${event.index + 1} of ${count}: step ${event.step} of ${event.total}`;
      } else if (event.type.endsWith('.partial_image')) {
        preview.src = `data:image/png;base64,${event.b64_json}`;
        preview.hidden = false;
        preview.dataset.previews = String(Number(preview.dataset.previews) + 1);
      } else if (event.type.endsWith('.completed')) {
        made += 1;
        showImage(event.b64_json, event.aigc, made);
      } else if (event.type === 'aigc.notices') {
        const warnings = (event.notices || []).filter((n) => n.level === 'warning').map((n) => n.message);
        if (warnings.length) $('image-progress-text').textContent = warnings.join(' ');
      }
    }
    $('image-progress').value = 1;
    $('image-progress-text').textContent = `Done: ${made} image${made === 1 ? '' : 's'}`;
    preview.hidden = true;
  } catch (error) {
    $('image-progress-text').textContent = error.name === 'AbortError' ? 'Stopped' : '';
    showError('image', error);
  } finally {
    imaging.controller = null;
    busy('image-go', 'image-stop', false);
  }
}

function showImage(b64, record, number) {
  const blob = new Blob([bytesOf(b64)], { type: 'image/png' });
  const url = URL.createObjectURL(blob);
  const again = element('button', { type: 'button', text: 'Again with a change', onclick: () => fillImage(record, record.prompt) });
  const caption = element('figcaption', {}, recordList(record, RECORD_FIELDS.image),
    element('div', { class: 'buttons' },
      element('a', { class: 'download', href: url, download: `aigc-${record.seed}.png`, text: 'Download PNG' }), again));
  const figure = element('figure', { 'data-seed': shown(record.seed) },
    element('img', { src: url, alt: `Image ${number}: ${record.prompt}`, width: record.width, height: record.height }),
    caption);
  $('image-results').prepend(figure);
}

// Fill the image form from a record (or a log row's settings), to run it again with a change.
function fillImage(record, prompt) {
  selectTab('image', false);
  setValue('image-prompt', prompt);
  setValue('image-negative', record.negative);
  setModel($('image-model'), record.model);
  for (const name of ['width', 'height', 'steps', 'guidance', 'strength']) setValue(`image-${name}`, record[name]);
  setValue('image-scheduler', record.scheduler || '');
  setValue('image-seed', record.seed);
  $('image-random').checked = record.seed === null || record.seed === undefined;
  setValue('image-count', 1);
  imaging.extra = pick(record, ['lora', 'vae']);
  const notes = [];
  if (record.init_image) notes.push('it started from an image: choose that image again (Start from an image)');
  showError('image', notes.length ? new ApiError(`To make it again, ${notes.join('; ')}`, 0) : null);
  $('image-prompt').focus();
}

// --- the inpainting mask: painted over the start image, or uploaded ------------------------------------

const maskView = $('mask-canvas');

$('image-init').addEventListener('change', async () => {
  const file = $('image-init').files[0];
  imaging.maskDirty = false;
  $('mask-area').hidden = !file;
  $('mask-clear').hidden = true;
  if (!file) return;
  const picture = new Image();
  picture.src = URL.createObjectURL(file);
  await picture.decode().catch(() => null);
  imaging.picture = picture;
  const [w, h] = [picture.naturalWidth || 64, picture.naturalHeight || 64];
  maskView.width = w;
  maskView.height = h;
  imaging.mask = document.createElement('canvas');
  imaging.mask.width = w;
  imaging.mask.height = h;
  clearMask();
});

function clearMask() {
  const ctx = imaging.mask.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, imaging.mask.width, imaging.mask.height);
  imaging.maskDirty = false;
  $('mask-clear').hidden = true;
  drawMaskView();
}

function drawMaskView() {
  const ctx = maskView.getContext('2d');
  ctx.globalAlpha = 1;
  if (imaging.picture) ctx.drawImage(imaging.picture, 0, 0, maskView.width, maskView.height);
  ctx.globalAlpha = 0.6;
  ctx.globalCompositeOperation = 'screen';
  ctx.drawImage(imaging.mask, 0, 0);
  ctx.globalCompositeOperation = 'source-over';
  ctx.globalAlpha = 1;
}

// The painted mask as OpenAI's edits take one (a canvas exports RGBA only): transparent where painted.
function maskPng() {
  const out = document.createElement('canvas');
  out.width = imaging.mask.width;
  out.height = imaging.mask.height;
  const pixels = imaging.mask.getContext('2d').getImageData(0, 0, out.width, out.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    pixels.data[i + 3] = pixels.data[i] > 127 ? 0 : 255;
    pixels.data[i] = 0;
    pixels.data[i + 1] = 0;
    pixels.data[i + 2] = 0;
  }
  out.getContext('2d').putImageData(pixels, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}

function paint(event) {
  const box = maskView.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * maskView.width;
  const y = ((event.clientY - box.top) / box.height) * maskView.height;
  const ctx = imaging.mask.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.beginPath();
  ctx.arc(x, y, Math.max(2, Math.min(maskView.width, maskView.height) / 16), 0, Math.PI * 2);
  ctx.fill();
  imaging.maskDirty = true;
  $('mask-clear').hidden = false;
  drawMaskView();
}

maskView.addEventListener('pointerdown', (event) => {
  maskView.setPointerCapture(event.pointerId);
  paint(event);
});
maskView.addEventListener('pointermove', (event) => {
  if (maskView.hasPointerCapture(event.pointerId)) paint(event);
});
$('mask-clear').addEventListener('click', clearMask);

// --- speech -----------------------------------------------------------------------------------------------

const speaking = { extra: {} };

$('speech-form').addEventListener('submit', (event) => {
  event.preventDefault();
  speak();
});

async function speak() {
  showError('speech', null);
  const format = $('speech-format').value;
  const text = $('speech-text').value;
  const settings = { voice: $('speech-voice').value || null, speed: numberOrNull('speech-speed'),
    seed: numberOrNull('speech-seed') };
  const body = { model: $('speech-model').value || undefined, input: text, response_format: format, ...speaking.extra,
    ...pick(settings, Object.keys(settings)) };
  speaking.extra = {};
  busy('speech-go', null, true);
  try {
    const response = await post('/v1/audio/speech', body);
    // the record rides in a header without the text (the page has it)
    const record = { text, ...JSON.parse(response.headers.get('x-aigc-record') || '{}') };
    record.duration = Number(response.headers.get('x-aigc-duration')) || undefined;
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const again = element('button', { type: 'button', text: 'Again with a change',
      onclick: () => fillSpeech(record, text) });
    $('speech-result').replaceChildren(element('figure', { 'data-seed': shown(record.seed) },
      element('audio', { controls: true, src: url, 'aria-label': `Speech: ${text.slice(0, 60)}` }),
      element('figcaption', {}, recordList(record, RECORD_FIELDS.speech), element('div', { class: 'buttons' },
        element('a', { class: 'download', href: url, download: `aigc-speech-${record.seed}.${format}`,
          text: `Download ${format.toUpperCase()}` }), again))));
  } catch (error) {
    showError('speech', error);
  } finally {
    busy('speech-go', null, false);
  }
}

function fillSpeech(record, text) {
  selectTab('speech', false);
  setValue('speech-text', text);
  setModel($('speech-model'), record.model);
  loadVoices(record.voice || 'default');
  setValue('speech-speed', record.speed ?? 1);
  setValue('speech-seed', record.seed);
  speaking.extra = pick(record, ['sentence_silence']);
  showError('speech', null);
  $('speech-text').focus();
}

// --- history: the log -------------------------------------------------------------------------------------

const logView = { oldest: null };

$('history-form').addEventListener('submit', (event) => {
  event.preventDefault();
  loadHistory(true);
});
$('history-more').addEventListener('click', () => loadHistory(false));

async function loadHistory(fresh) {
  showError('history', null);
  const query = new URLSearchParams({ limit: '50' });
  if ($('history-search').value.trim()) query.set('search', $('history-search').value.trim());
  if ($('history-modality').value) query.set('modality', $('history-modality').value);
  if (!fresh && logView.oldest) query.set('before', String(logView.oldest));
  let answer;
  try {
    answer = await getJson(`/api/logs?${query}`);
  } catch (error) {
    showError('history', error);
    return;
  }
  if (fresh) {
    $('history-rows').replaceChildren();
    $('history-detail').replaceChildren();
    $('history-detail').hidden = true;
  }
  for (const row of answer.data) {
    const when = (row.time || '').slice(0, 16).replace('T', ' ');
    const output = row.file || row.output || `${row.modality}${row.sha256 ? ` ${row.sha256.slice(0, 12)}` : ''}`;
    const open = element('button', { type: 'button', text: String(row.id), 'aria-label': `Show generation ${row.id}`,
      onclick: () => showRow(row) });
    const tr = element('tr', { 'data-id': row.id, onclick: (event) => { if (event.target !== open) showRow(row); } },
      element('td', {}, open), element('td', { text: when }), element('td', { text: row.modality }),
      element('td', { class: 'text', text: (row.model || '').split('/').pop() }),
      element('td', { class: 'text', text: row.prompt || '' }), element('td', { class: 'text', text: output }));
    $('history-rows').append(tr);
    logView.oldest = row.id;
  }
  const count = $('history-rows').children.length;
  $('history-empty').textContent = count ? `${count} generation${count === 1 ? '' : 's'}, newest first` : 'Nothing logged matches.';
  $('history-more').hidden = !answer.more;
}

function showRow(row) {
  for (const tr of $('history-rows').children) tr.setAttribute('aria-current', String(tr.dataset.id === String(row.id)));
  const flags = (row.settings && row.settings.flags) || {};
  const facts = { id: row.id, time: row.time, command: row.command, modality: row.modality, model: row.model,
    prompt: row.prompt, system: row.system, output: row.output, file: row.file, size: row.size, sha256: row.sha256,
    seed: row.seed, seconds: row.seconds, conversation: row.conversation, turn: row.turn, status: row.status };
  const detail = $('history-detail');
  detail.replaceChildren(element('h3', { text: `Generation ${row.id}` }), recordList(facts),
    element('details', {}, element('summary', { text: 'Every setting' }), recordList(flags)),
    element('div', { class: 'buttons' },
      element('button', { type: 'button', text: 'Run it again', onclick: () => rerun(row, true) }),
      element('button', { type: 'button', text: 'Change it first', onclick: () => rerun(row, false) })));
  detail.hidden = false;
  detail.focus();
}

// Fill the row's panel with its settings and seed; run them at once (`aigc logs rerun`) or leave it to the user.
function rerun(row, now) {
  const flags = { ...((row.settings && row.settings.flags) || {}) };
  const model = flags.model || row.model;
  if (row.modality === 'text') {
    selectTab('chat', false);
    newConversation();
    setModel($('chat-model'), model);
    setValue('chat-system', flags.system);
    setValue('chat-max-tokens', flags.max_tokens);
    setValue('chat-temperature', flags.temperature);
    setValue('chat-seed', flags.seed);
    const turns = (row.messages || []).slice(0, -1);
    for (const [role, content] of turns) {
      chat.turns.push({ role, content });
      chatItem(role, content);
    }
    chat.extra = pick(flags, ['top_k', 'top_p', 'repetition_penalty', 'stop']);
    setValue('chat-prompt', row.prompt);
    if (now) sendChat();
    else $('chat-prompt').focus();
  } else if (row.modality === 'image') {
    const record = (row.settings && row.settings.record) || {};
    fillImage({ ...record, ...pick(flags, RERUN_FLAGS.image), model }, row.prompt);
    if (now && !record.init_image) makeImages();
  } else {
    fillSpeech({ ...pick(flags, RERUN_FLAGS.speech), model }, row.prompt);
    if (now) speak();
  }
}

// --- what is this file? -----------------------------------------------------------------------------------

const drop = $('drop');
drop.addEventListener('dragover', (event) => {
  event.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  if (event.dataTransfer.files[0]) describe(event.dataTransfer.files[0]);
});
$('file-input').addEventListener('change', () => $('file-input').files[0] && describe($('file-input').files[0]));

async function describe(file) {
  showError('file', null);
  $('file-result').replaceChildren();
  try {
    const answer = await (await post('/api/describe', { name: file.name, file: await readAsDataUrl(file) })).json();
    const record = answer.record;
    const again = element('button', { type: 'button', text: 'Make it again', onclick: () => {
      if (record.kind === 'image') {
        fillImage(record, record.prompt);
        if (!record.init_image) makeImages();
      } else {
        fillSpeech(record, record.text || '');
        speak();
      }
    } });
    $('file-result').replaceChildren(element('h3', { text: `${answer.name}: ${record.kind || 'a file'} made by aigc` }),
      recordList(record), ['image', 'speech'].includes(record.kind) ? again : null);
  } catch (error) {
    showError('file', error);
  }
}

start();
