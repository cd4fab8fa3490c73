/*
 * Predictive Power Allocation: a dashboard card for one site.
 *
 * A plain ES module served by the integration itself (card.py): no build step, no imports, no
 * lit (Home Assistant has no global one to rely on), so a vanilla custom element with a shadow
 * root, rendered again whenever one of the site's states changes.
 *
 *   type: custom:power-allocation-card
 *   site: Demo rack      # optional: the site's config entry id or device name; default the first
 *   title: Rack power    # optional: default the site's name
 *
 * Everything else is found in the entity and device registries (hass.entities, hass.devices):
 * the site is the device identified by (power_allocation, <entry id>); its UPS, PDU and service
 * devices by (power_allocation, "<entry id>_<ups|pdu|service>_<id>"); an outlet's entities sit
 * on its PDU's device. Entities are told apart by their translation key.
 *
 * DOM contract (the browser test relies on it; keep it):
 *   .header[data-on-battery="true"|"false"][data-mode="<controller_state state>"]
 *   .tile[data-service="<service id>"][data-state="<allocation state>"][data-priority="<tier>"]
 *     one per service, the id as in the topology (e.g. "db")
 *   .tile[data-outlet="<pdu id>/<n>"][data-state="metered"|"unavailable"]
 *     one per outlet no service is bound to, after the services
 *   .timeline .step[data-service="<service id>"][data-action="<shutdown|throttle>"]
 *     one per step of the next_action sensor's plan, in order
 * A state that is missing or unavailable shows as "unavailable" (data-state too).
 */

const DOMAIN = "power_allocation";
const TIERS = ["critical", "high", "medium", "low"];
const DEVICE_KINDS = ["ups", "pdu", "service"];
// An outlet's entities live on its PDU's device; these translation keys mark them.
const OUTLET_KEYS = new Set(["power", "forecast_power", "outlet"]);
// Units Home Assistant may display a sensor in (the user can change them), to the native one.
const SECONDS = { ms: 0.001, s: 1, min: 60, h: 3600, d: 86400 };
const WATTS = { mW: 0.001, W: 1, kW: 1000, MW: 1e6 };
const WATT_HOURS = { Wh: 1, kWh: 1000, MWh: 1e6 };
const ACTION_VERBS = { shutdown: "stop", throttle: "throttle" };

/** Sites: the devices whose identifier is one of their own config entries. */
function findSites(hass) {
  const sites = [];
  for (const device of Object.values(hass?.devices ?? {})) {
    for (const [domain, id] of device.identifiers ?? []) {
      if (domain === DOMAIN && (device.config_entries ?? []).includes(id)) {
        sites.push({ entryId: id, name: device.name_by_user || device.name || id });
      }
    }
  }
  return sites;
}

/** The outlet number of an outlet entity: its default entity id has it, else its name does. */
function outletNumber(entity) {
  const match = /_outlet_(\d+)(?:_|$)/.exec(entity.entity_id) ?? /(\d+)/.exec(entity.name ?? "");
  return match ? match[1] : null;
}

/** A site's entity ids, by item: { site: {key: id}, ups: {id: {key: id}}, pdus, services,
 * outlets: {"pdu/n": {key: id}} }. */
function siteEntities(hass, entryId) {
  const devices = {}; // device registry id -> [kind, item id]
  for (const device of Object.values(hass.devices ?? {})) {
    for (const [domain, identifier] of device.identifiers ?? []) {
      if (domain !== DOMAIN) continue;
      if (identifier === entryId) devices[device.id] = ["site", null];
      for (const kind of DEVICE_KINDS) {
        const prefix = `${entryId}_${kind}_`;
        if (identifier.startsWith(prefix)) devices[device.id] = [kind, identifier.slice(prefix.length)];
      }
    }
  }
  const site = { site: {}, ups: {}, pdus: {}, services: {}, outlets: {} };
  const add = (group, id, key, entityId) => ((group[id] ??= {})[key] = entityId);
  for (const entity of Object.values(hass.entities ?? {})) {
    const device = entity.platform === DOMAIN && devices[entity.device_id];
    if (!device || !entity.translation_key) continue;
    const [kind, id] = device;
    const key = entity.translation_key;
    if (kind === "site") site.site[key] = entity.entity_id;
    else if (kind === "ups") add(site.ups, id, key, entity.entity_id);
    else if (kind === "service") add(site.services, id, key, entity.entity_id);
    else if (OUTLET_KEYS.has(key)) {
      const number = outletNumber(entity);
      if (number !== null) add(site.outlets, `${id}/${number}`, key, entity.entity_id);
    } else add(site.pdus, id, key, entity.entity_id);
  }
  return site;
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A state object that says something: undefined when missing, unavailable or unknown. */
function known(hass, entityId) {
  const state = entityId ? hass.states[entityId] : undefined;
  return state && state.state !== "unavailable" && state.state !== "unknown" ? state : undefined;
}

/** A numeric state in the native unit, through `units` (the conversions to it); else null. */
function numeric(hass, entityId, units) {
  const state = known(hass, entityId);
  if (!state) return null;
  const value = Number(state.state);
  const unit = state.attributes.unit_of_measurement;
  const factor = units && unit in units ? units[unit] : 1;
  return Number.isFinite(value) ? value * factor : null;
}

/** "unavailable" for a missing or unavailable entity, "—" for an unknown one, else `text`. */
function shown(hass, entityId, text) {
  const state = entityId ? hass.states[entityId] : undefined;
  if (!state || state.state === "unavailable") return "unavailable";
  return text ?? "—";
}

function duration(seconds) {
  if (seconds === null) return null;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  const hours = Math.floor(s / 3600);
  const minutes = Math.round((s % 3600) / 60);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

const watts = (w) => (w === null ? null : w >= 10000 ? `${(w / 1000).toFixed(1)} kW` : `${Math.round(w)} W`);
/** A forecast and its upper band as one range: "153–184 W". */
const wattRange = (low, high) =>
  high === null || high >= 10000
    ? watts(low) + (high === null ? "" : `–${watts(high)}`)
    : `${Math.round(low)}–${watts(high)}`;
const wattHours = (wh) =>
  wh === null ? null : wh >= 1000 ? `${(wh / 1000).toFixed(2)} kWh` : `${Math.round(wh)} Wh`;

/** The translated state where the frontend offers it (e.g. "Throttled"), else the raw one. */
function stateText(hass, state) {
  return hass.formatEntityState ? hass.formatEntityState(state) : state.state;
}

class PowerAllocationCard extends HTMLElement {
  static getStubConfig(hass) {
    const [site] = findSites(hass);
    return site
      ? { type: "custom:power-allocation-card", site: site.name }
      : { type: "custom:power-allocation-card" };
  }

  /** The visual editor: Home Assistant renders this form itself. */
  static getConfigForm() {
    const labels = { site: "Site (default: the first)", title: "Title (default: the site's name)" };
    return {
      schema: [
        { name: "site", selector: { config_entry: { integration: DOMAIN } } },
        { name: "title", selector: { text: {} } },
      ],
      computeLabel: (field) => labels[field.name],
    };
  }

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._watched = []; // [entity id, state object] of the last render
    // One listener for every tile: the tiles are replaced on each render.
    this.shadowRoot.addEventListener("click", (event) => this._moreInfo(event));
    this.shadowRoot.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") this._moreInfo(event);
    });
  }

  setConfig(config) {
    if (!config || typeof config !== "object")
      throw new Error("power-allocation-card: the configuration must be a mapping");
    for (const key of ["site", "title"]) {
      if (key in config && typeof config[key] !== "string") {
        throw new Error(`power-allocation-card: "${key}" must be a text`);
      }
    }
    // The visual editor leaves a cleared field as an empty text: that means the default.
    const given = (key) => (config[key]?.trim() ? config[key].trim() : undefined);
    this._config = { ...config, site: given("site"), title: given("title") };
    this._site = undefined;
    this._render();
  }

  set hass(hass) {
    this._hass = hass;
    // The registries change rarely and the states every few seconds: find the site's entities
    // again only when a registry changed, and render only when one of their states did.
    if (hass.entities !== this._entities || hass.devices !== this._devices) {
      this._entities = hass.entities;
      this._devices = hass.devices;
      this._site = undefined;
    }
    if (this._site !== undefined && this._watched.every(([id, state]) => hass.states[id] === state)) return;
    this._render();
  }

  getCardSize() {
    const site = this._site;
    if (!site) return 3;
    const tiles = Object.keys(site.services).length + this._outletOnly(site).length;
    const steps = this._plan().length;
    return 2 + Math.ceil(tiles / 3) * 2 + (steps ? 1 + steps : 1);
  }

  getGridOptions() {
    return { columns: "full", min_columns: 6 };
  }

  _moreInfo(event) {
    const target = event.composedPath().find((node) => node.dataset?.entity);
    if (!target) return;
    event.preventDefault();
    this.dispatchEvent(
      new CustomEvent("hass-more-info", {
        detail: { entityId: target.dataset.entity },
        bubbles: true,
        composed: true,
      }),
    );
  }

  /** The configured site, or the first, with its entity ids; null when there is none (yet). */
  _findSite() {
    const sites = findSites(this._hass);
    const wanted = this._config.site;
    const site = wanted ? sites.find((s) => s.entryId === wanted || s.name === wanted) : sites[0];
    return site ? { name: site.name, ...siteEntities(this._hass, site.entryId) } : null;
  }

  _outletOnly(site) {
    return Object.keys(site.outlets)
      .filter((id) => !site.outlets[id].outlet)
      .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  }

  _plan() {
    const next = known(this._hass, this._site?.site.next_action);
    return Array.isArray(next?.attributes.plan) ? next.attributes.plan : [];
  }

  _render() {
    if (!this._config || !this._hass) return;
    try {
      this.shadowRoot.innerHTML = `<style>${STYLE}</style>${this._card()}`;
    } catch (error) {
      // A dashboard card must never take the dashboard down: show what went wrong instead.
      this.shadowRoot.innerHTML = `<style>${STYLE}</style><ha-card><div class="warning">${escapeHtml(error)}</div></ha-card>`;
    }
  }

  _card() {
    const hass = this._hass;
    if (this._site === undefined) this._site = this._findSite();
    const site = this._site;
    if (!site) {
      this._watched = [];
      const what = this._config.site
        ? `No power allocation site "${escapeHtml(this._config.site)}".`
        : "No power allocation site yet.";
      return `<ha-card><div class="warning">${what}</div></ha-card>`;
    }
    // On mains the plan (and each service's shed time) is that of an outage starting now.
    this._onBattery = Object.values(site.ups).some((e) => known(hass, e.on_battery)?.state === "on");
    const ids = [
      ...Object.values(site.site),
      ...[site.ups, site.pdus, site.services, site.outlets].flatMap((group) =>
        Object.values(group).flatMap(Object.values),
      ),
    ];
    this._watched = ids.map((id) => [id, hass.states[id]]);
    return `<ha-card>${this._header(site, this._config.title ?? site.name)}
      <div class="tiles">${this._tiles(site)}</div>${this._timeline(site)}</ha-card>`;
  }

  _header(site, title) {
    const hass = this._hass;
    const ups = Object.entries(site.ups).sort(([a], [b]) => a.localeCompare(b));
    const onBattery = this._onBattery;
    const mode = hass.states[site.site.controller_state]?.state ?? "unavailable";
    const modeState = known(hass, site.site.controller_state);
    const energies = ups.map(([, e]) => numeric(hass, e.energy_left, WATT_HOURS));
    const energy =
      energies.length && energies.every((wh) => wh !== null) ? energies.reduce((a, b) => a + b, 0) : null;
    const runtime = numeric(hass, site.site.critical_runtime, SECONDS);
    const budget = numeric(hass, site.site.budget, WATTS);
    const conservative = known(hass, site.site.conservative_plan)?.state === "on";
    const charges = ups
      .map(([id, e]) => {
        const soc = numeric(hass, e.state_of_charge);
        return `<span class="chip" data-entity="${escapeHtml(e.state_of_charge ?? "")}">${escapeHtml(id)} ${soc === null ? shown(hass, e.state_of_charge) : `${Math.round(soc)} %`}</span>`;
      })
      .join("");
    const fact = (label, entityId, text) =>
      `<div class="fact" data-entity="${escapeHtml(entityId ?? "")}"><span class="label">${label}</span><span class="value">${escapeHtml(shown(hass, entityId, text))}</span></div>`;
    return `<div class="header" data-on-battery="${onBattery}" data-mode="${escapeHtml(mode)}">
      <div class="title-row">
        <div class="title">${escapeHtml(title)}</div>
        <span class="chip power ${onBattery ? "battery" : "mains"}" data-entity="${escapeHtml(ups[0]?.[1].on_battery ?? "")}">${onBattery ? "On battery" : "On mains"}</span>
        <span class="chip mode" data-entity="${escapeHtml(site.site.controller_state ?? "")}">${escapeHtml(modeState ? stateText(hass, modeState) : mode)}</span>
        ${conservative ? `<span class="chip" data-entity="${escapeHtml(site.site.conservative_plan)}">Conservative plan</span>` : ""}
        ${charges}
      </div>
      <div class="facts">
        ${fact("Energy left", ups[0]?.[1].energy_left, wattHours(energy))}
        ${fact("Critical runtime", site.site.critical_runtime, duration(runtime))}
        ${fact("Budget", site.site.budget, watts(budget))}
      </div>
    </div>`;
  }

  _tiles(site) {
    const hass = this._hass;
    const tier = (id) => {
      const index = TIERS.indexOf(known(hass, site.services[id].priority)?.state);
      return index < 0 ? TIERS.length : index;
    };
    const services = Object.keys(site.services).sort((a, b) => tier(a) - tier(b) || a.localeCompare(b));
    return [
      ...services.map((id) => this._serviceTile(id, site.services[id])),
      ...this._outletOnly(site).map((id) => this._outletTile(id, site.outlets[id])),
    ].join("");
  }

  _serviceTile(id, entities) {
    const hass = this._hass;
    const allocation = hass.states[entities.allocation];
    const state = allocation?.state ?? "unavailable";
    const available = known(hass, entities.allocation);
    const priority = known(hass, entities.priority)?.state ?? "unknown";
    const forecast = known(hass, entities.service_forecast);
    const shedIn = numeric(hass, entities.planned_shed, SECONDS);
    const when = this._onBattery ? `shed in ${duration(shedIn)}` : `shed after ${duration(shedIn)} of outage`;
    // A shed time is about a service still running; one stopping, off or starting has none.
    const running = state === "on" || state === "throttled";
    const shed = running ? shown(hass, entities.planned_shed, shedIn === null ? null : when) : "—";
    const reason = available?.attributes.reason;
    return `<div class="tile state-${escapeHtml(state)}" role="button" tabindex="0" data-service="${escapeHtml(id)}" data-state="${escapeHtml(state)}" data-priority="${escapeHtml(priority)}" data-entity="${escapeHtml(entities.allocation ?? "")}" title="${escapeHtml(reason ?? "")}">
      <div class="tile-head"><span class="name">${escapeHtml(id)}</span><span class="badge tier-${escapeHtml(priority)}">${escapeHtml(priority)}</span></div>
      <div class="state">${escapeHtml(available ? stateText(hass, available) : state)}</div>
      ${this._bar(numeric(hass, entities.service_power, WATTS), numeric(hass, entities.service_forecast, WATTS), forecast?.attributes.upper_w ?? null, available?.attributes.cap_w ?? null, entities.service_power)}
      <div class="shed">${escapeHtml(shed)}</div>
    </div>`;
  }

  _outletTile(id, entities) {
    const hass = this._hass;
    const state = known(hass, entities.power) ? "metered" : "unavailable";
    return `<div class="tile outlet" role="button" tabindex="0" data-outlet="${escapeHtml(id)}" data-state="${state}" data-entity="${escapeHtml(entities.power ?? "")}">
      <div class="tile-head"><span class="name">${escapeHtml(id)}</span><span class="badge">outlet</span></div>
      <div class="state">${state === "metered" ? "no service" : "unavailable"}</div>
      ${this._bar(numeric(hass, entities.power, WATTS), numeric(hass, entities.forecast_power, WATTS), null, null, entities.power)}
      <div class="shed">—</div>
    </div>`;
  }

  /** Live power as a bar, the forecast as a mark and up to its upper band as a shaded zone, a
   * throttle cap as a dashed mark: all on the tile's own scale, so small services read too. */
  _bar(power, forecast, upper, cap, powerEntity) {
    const hass = this._hass;
    const scale = Math.max(power ?? 0, forecast ?? 0, upper ?? 0, cap ?? 0, 1) * 1.15;
    const at = (w) => `${Math.min(100, (100 * w) / scale).toFixed(1)}%`;
    const band =
      forecast !== null
        ? `<div class="band" style="left:${at(forecast)};width:calc(${at(upper ?? forecast)} - ${at(forecast)})"></div><div class="mark" style="left:${at(forecast)}"></div>`
        : "";
    const capMark = cap !== null ? `<div class="mark cap" style="left:${at(cap)}"></div>` : "";
    const fill = power !== null ? `<div class="fill" style="width:${at(power)}"></div>` : "";
    const text = shown(hass, powerEntity, watts(power));
    const forecastText = forecast === null ? "" : `/ ${wattRange(forecast, upper)}`;
    return `<div class="bar">${band}${fill}${capMark}</div><div class="power"><span>${escapeHtml(text)}</span><span class="forecast">${escapeHtml(forecastText)}</span></div>`;
  }

  _timeline(site) {
    const plan = this._plan();
    const hass = this._hass;
    const steps = plan
      .map((step, index) => {
        const priority = known(hass, site.services[step.service]?.priority)?.state;
        const verb = ACTION_VERBS[step.action] ?? step.action;
        // Steps due at the same time (a whole tier at once) share the first one's time.
        const when = `in ${duration(Number(step.in_s)) ?? "?"}`;
        const same = index > 0 && when === `in ${duration(Number(plan[index - 1].in_s)) ?? "?"}`;
        return `<li class="step${same ? " same" : ""}" data-service="${escapeHtml(step.service)}" data-action="${escapeHtml(step.action)}" data-entity="${escapeHtml(site.services[step.service]?.allocation ?? "")}">
          <span class="when">${same ? "" : escapeHtml(when)}</span>
          <span class="what">${escapeHtml(verb)} <b>${escapeHtml(step.service)}</b>${priority ? ` <span class="badge tier-${escapeHtml(priority)}">${escapeHtml(priority)}</span>` : ""}</span>
        </li>`;
      })
      .join("");
    const empty = `<div class="empty">${escapeHtml(shown(hass, site.site.next_action, "Nothing planned"))}</div>`;
    return `<div class="plan"><div class="label">${this._onBattery ? "Plan" : "Plan if mains fails now"}</div><ol class="timeline" data-entity="${escapeHtml(site.site.next_action ?? "")}">${steps}</ol>${steps ? "" : empty}</div>`;
  }
}

const STYLE = `
  :host { display: block; }
  ha-card { display: block; padding: 12px 16px 16px; color: var(--primary-text-color); background: var(--ha-card-background, var(--card-background-color)); }
  [data-entity] { cursor: pointer; }
  [data-entity=""] { cursor: default; }
  .warning { padding: 8px; color: var(--error-color); }
  .header { padding-bottom: 12px; border-bottom: 1px solid var(--divider-color); }
  .title-row { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; }
  .title { font-size: 1.3em; font-weight: 500; margin-right: auto; }
  .chip { font-size: 0.8em; padding: 2px 8px; border-radius: 12px; background: var(--secondary-background-color); color: var(--secondary-text-color); }
  .chip.mains { background: var(--success-color); color: var(--text-primary-color, #fff); }
  .chip.battery { background: var(--error-color); color: var(--text-primary-color, #fff); }
  /* The mains chip says as much already. */
  .header[data-mode="normal"] .chip.mode, .header[data-mode="on_battery"] .chip.mode { display: none; }
  .facts { display: flex; gap: 24px; margin-top: 10px; flex-wrap: wrap; }
  .fact { display: flex; flex-direction: column; }
  .label { font-size: 0.75em; text-transform: uppercase; letter-spacing: 0.04em; color: var(--secondary-text-color); }
  .value { font-size: 1.25em; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 8px; margin-top: 12px; }
  .tile { padding: 8px 10px; border-radius: 8px; border: 1px solid var(--divider-color); border-left: 4px solid var(--success-color); background: var(--secondary-background-color); outline: none; }
  .tile:focus-visible { box-shadow: 0 0 0 2px var(--primary-color); }
  .tile.state-throttled { border-left-color: var(--warning-color); }
  .tile.state-stopping, .tile.state-starting { border-left-color: var(--info-color, var(--primary-color)); }
  .tile.state-off { border-left-color: var(--disabled-text-color, var(--secondary-text-color)); opacity: 0.75; }
  .tile.state-unavailable, .tile.state-unknown { border-left-color: var(--error-color); opacity: 0.6; }
  .tile.outlet { border-left-color: var(--divider-color); }
  .tile-head { display: flex; justify-content: space-between; align-items: center; gap: 4px; }
  .name { font-weight: 500; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .badge { font-size: 0.7em; padding: 1px 6px; border-radius: 8px; background: var(--divider-color); color: var(--primary-text-color); }
  .tier-critical { background: var(--error-color); color: var(--text-primary-color, #fff); }
  .tier-high { background: var(--warning-color); color: var(--text-primary-color, #fff); }
  .tier-medium { background: var(--info-color, var(--primary-color)); color: var(--text-primary-color, #fff); }
  .state { font-size: 0.85em; color: var(--secondary-text-color); margin: 2px 0 6px; }
  .bar { position: relative; height: 8px; border-radius: 4px; background: var(--divider-color); overflow: hidden; }
  .fill { position: absolute; inset: 0 auto 0 0; background: var(--primary-color); border-radius: 4px; }
  .band { position: absolute; top: 0; bottom: 0; background: var(--primary-text-color); opacity: 0.18; }
  .mark { position: absolute; top: 0; bottom: 0; width: 2px; background: var(--primary-text-color); }
  .mark.cap { background: var(--warning-color); }
  .power { display: flex; justify-content: space-between; gap: 4px; font-size: 0.8em; margin-top: 3px; white-space: nowrap; }
  .forecast, .shed { color: var(--secondary-text-color); }
  .shed { font-size: 0.8em; margin-top: 2px; }
  .plan { margin-top: 14px; }
  .timeline { list-style: none; margin: 6px 0 0; padding: 0 0 0 14px; border-left: 2px solid var(--divider-color); }
  .step { position: relative; display: flex; gap: 12px; padding: 3px 0; }
  .step::before { content: ""; position: absolute; left: -20px; top: 9px; width: 10px; height: 10px; border-radius: 50%; background: var(--primary-color); }
  .step[data-action="shutdown"]::before { background: var(--error-color); }
  .step[data-action="throttle"]::before { background: var(--warning-color); }
  .when { min-width: 104px; color: var(--secondary-text-color); }
  .step.same { padding-top: 0; }
  .step.same::before { width: 6px; height: 6px; left: -18px; top: 8px; }
  .empty { color: var(--secondary-text-color); font-size: 0.9em; margin-top: 4px; }
`;

// Home Assistant's app swaps window.customElements for a scoped registry (a polyfill) as it starts,
// and an element defined before that, in the browser's own registry, is unknown to it: loaded
// beside the app, this module may well run first. The app defines <home-assistant> through its
// registry, so once that is defined the registry in place is the app's.
window.customElements.whenDefined("home-assistant").then(() => {
  if (customElements.get("power-allocation-card")) return;
  customElements.define("power-allocation-card", PowerAllocationCard);
  window.customCards = window.customCards || [];
  window.customCards.push({
    type: "power-allocation-card",
    name: "Power allocation",
    description:
      "A power allocation site: each service's state, priority, power against its forecast and planned shed time; the UPS and the plan.",
    preview: true,
    documentationURL: "https://github.com/power-allocation/power_allocation/blob/main/docs/dashboard.md",
  });
});
