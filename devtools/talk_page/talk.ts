// The talk page: pick an agent, call it through the local talk server, hear it, see both
// sides' transcripts. Bundled with livekit-client by esbuild (web/package.json) so the
// page works offline. Its state for automation lives on <body>'s dataset (docs/talk.md).
import {
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  Room,
  RoomEvent,
  type TextStreamReader,
  Track,
} from "livekit-client";

type CallState = "idle" | "connecting" | "waiting-agent" | "connected" | "ended" | "error";

interface AgentRow {
  id: string;
  name: string;
  domain: string;
  pipeline: string;
  greeting: string;
}

interface CallGrant {
  url: string;
  token: string;
  room: string;
  identity: string;
}

/** RMS (full scale 1.0) above which the agent's audio counts as heard: espeak speech
 * sits around 0.1, the silence between words of a WebRTC track below 0.005. */
const LEVEL_THRESHOLD = 0.02;
/** Below the threshold this long, the next loud frame starts a new burst (a new utterance). */
const BURST_GAP_MS = 600;
const LEVEL_POLL_MS = 20;
const STATUS_POLL_MS = 500;
const ATTRIBUTES = ["agentId", "promptSource", "promptUpdatedAt", "promptStale"] as const;

const body = document.body;
const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`page element #${id} is missing`);
  return el as T;
};

let room: Room | null = null;
let grant: CallGrant | null = null;
let callStartedAt = 0;
let audioContext: AudioContext | null = null;
let levelTimer: number | undefined;
let statusTimer: number | undefined;
const bursts: number[] = [];

function sinceStart(): number {
  return Math.round(performance.now() - callStartedAt);
}

function setState(state: CallState, detail?: string): void {
  body.dataset.callState = state;
  $("state").textContent = state;
  $<HTMLButtonElement>("hangup").disabled = !["connecting", "waiting-agent", "connected"].includes(state);
  for (const button of document.querySelectorAll<HTMLButtonElement>("#agents button")) {
    button.disabled = ["connecting", "waiting-agent", "connected"].includes(state);
  }
  if (detail !== undefined) {
    const error = $("error");
    error.textContent = detail;
    error.hidden = false;
  }
}

function fail(message: string): void {
  body.dataset.error = message;
  setState("error", message);
  void endCall(false);
}

async function loadAgents(): Promise<AgentRow[]> {
  const response = await fetch("/api/agents");
  const answer = (await response.json()) as { agents?: AgentRow[]; error?: string };
  if (!response.ok || answer.agents === undefined) {
    throw new Error(answer.error ?? `agents: HTTP ${response.status}`);
  }
  return answer.agents;
}

function showAgents(agents: AgentRow[]): void {
  const list = $("agents");
  list.replaceChildren();
  for (const agent of agents) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.agentId = agent.id;
    button.textContent = agent.name;
    const about = document.createElement("small");
    about.textContent = [agent.domain, agent.pipeline].filter(Boolean).join(" · ");
    button.append(about);
    button.addEventListener("click", () => void startCall(agent.id, agent.name));
    item.append(button);
    list.append(item);
  }
  $("agents-note").textContent = agents.length ? "Choose an agent to call it." : "No agents.";
}

function showFact(name: string, value: string): void {
  $(`fact-${name}`).textContent = value || "–";
}

async function startCall(agentId: string, name: string): Promise<void> {
  callStartedAt = performance.now();
  bursts.length = 0;
  for (const key of ["firstAudioMs", "promptSource", "agentBursts", "agentAudioAt", "error"]) {
    delete body.dataset[key];
  }
  $("transcript").replaceChildren();
  $("error").hidden = true;
  $("call").hidden = false;
  $("call-title").textContent = `Call with ${name}`;
  for (const attribute of ATTRIBUTES) showFact(attribute, "");
  showFact("firstAudio", "");
  setState("connecting");
  // Created inside the click (or at load with autoplay allowed): playback may start.
  audioContext = new AudioContext();
  void audioContext.resume();
  const response = await fetch("/api/calls", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ agentId }),
  });
  const answer = (await response.json()) as Partial<CallGrant> & { error?: string };
  if (!response.ok || answer.token === undefined) {
    fail(answer.error ?? `call: HTTP ${response.status}`);
    return;
  }
  grant = answer as CallGrant;
  showFact("room", grant.room);
  const current = new Room();
  room = current;
  current
    .on(RoomEvent.TrackSubscribed, (track, _publication, participant) => onTrack(track, participant))
    .on(RoomEvent.ParticipantAttributesChanged, (_changed, participant) => onAttributes(participant))
    .on(RoomEvent.ParticipantConnected, (participant) => onAttributes(participant))
    .on(RoomEvent.ParticipantDisconnected, (participant) => {
      if (participant.isAgent && room === current) void endCall(true);
    })
    .on(RoomEvent.AudioPlaybackStatusChanged, () => showAudioBlocked())
    .on(RoomEvent.Disconnected, () => {
      if (room === current) void endCall(false);
    });
  current.registerTextStreamHandler("lk.transcription", (reader, from) => void onTranscript(reader, from.identity));
  try {
    await current.connect(grant.url, grant.token);
    await current.localParticipant.setMicrophoneEnabled(true);
  } catch (err) {
    fail(`could not join the room: ${String(err)}`);
    return;
  }
  showAudioBlocked();
  if (body.dataset.callState === "connecting") setState("waiting-agent");
  for (const participant of current.remoteParticipants.values()) onAttributes(participant);
  statusTimer = window.setInterval(() => void checkDispatch(), STATUS_POLL_MS);
}

/** A browser may refuse to play audio that no click started (a call started by
 * ``?agent=`` at load): then a button lets the caller start it. */
function showAudioBlocked(): void {
  const blocked = room !== null && (!room.canPlaybackAudio || audioContext?.state === "suspended");
  $("start-audio").hidden = !blocked;
}

async function startAudio(): Promise<void> {
  await audioContext?.resume();
  await room?.startAudio();
  showAudioBlocked();
}

async function checkDispatch(): Promise<void> {
  if (grant === null || body.dataset.callState !== "waiting-agent") return;
  const response = await fetch(`/api/calls/${encodeURIComponent(grant.room)}`);
  const answer = (await response.json()) as { status?: string; error?: string | null };
  if (answer.status === "failed") fail(answer.error ?? "no agent came");
}

function onAttributes(participant: Participant): void {
  if (!participant.isAgent) return;
  const attributes = participant.attributes;
  for (const attribute of ATTRIBUTES) showFact(attribute, attributes[attribute] ?? "");
  const source = attributes.promptSource;
  if (source) {
    body.dataset.promptSource = source;
    if (body.dataset.callState === "waiting-agent" || body.dataset.callState === "connecting") {
      setState("connected");
    }
  }
}

function onTrack(track: RemoteTrack, participant: RemoteParticipant): void {
  if (track.kind !== Track.Kind.Audio) return;
  // Chrome feeds a remote WebRTC stream to WebAudio only while a media element plays it.
  const element = track.attach();
  $("audio").append(element);
  if (participant.isAgent && audioContext !== null) watchLevel(audioContext, track.mediaStreamTrack);
  showAudioBlocked();
}

function watchLevel(context: AudioContext, mediaTrack: MediaStreamTrack): void {
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(new MediaStream([mediaTrack])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let lastLoud = -Infinity;
  window.clearInterval(levelTimer);
  levelTimer = window.setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    $("level").style.width = `${Math.min(100, Math.round(rms * 400))}%`;
    if (rms < LEVEL_THRESHOLD) return;
    const now = sinceStart();
    if (body.dataset.firstAudioMs === undefined) {
      body.dataset.firstAudioMs = String(now);
      showFact("firstAudio", `${now} ms after the call started`);
    }
    if (now - lastLoud > BURST_GAP_MS && bursts.length < 50) {
      bursts.push(now);
      body.dataset.agentBursts = bursts.join(",");
    }
    lastLoud = now;
    body.dataset.agentAudioAt = String(now);
  }, LEVEL_POLL_MS);
}

async function onTranscript(reader: TextStreamReader, sender: string): Promise<void> {
  const attributes = reader.info.attributes ?? {};
  const segment = attributes["lk.segment_id"] ?? reader.info.id;
  const role = grant !== null && sender === grant.identity ? "caller" : "agent";
  let line = document.querySelector<HTMLLIElement>(`#transcript li[data-segment="${CSS.escape(segment)}"]`);
  if (line === null) {
    line = document.createElement("li");
    line.dataset.segment = segment;
    line.dataset.role = role;
    $("transcript").append(line);
  }
  line.dataset.final = "false";
  // One stream carries a segment's text in pieces (the agent's words as it speaks them);
  // a later stream for the same segment (the caller's final) replaces the earlier text.
  let text = "";
  for await (const chunk of reader) {
    text += chunk;
    line.textContent = text;
  }
  // The agent's streams say final in their trailer, read into info once the stream ends.
  const closing = reader.info.attributes ?? {};
  line.dataset.final = closing["lk.transcription_final"] === "false" ? "false" : "true";
  line.dataset.at = String(sinceStart());
  line.scrollIntoView({ block: "end" });
}

async function endCall(agentLeft: boolean): Promise<void> {
  const ending = room;
  const ended = grant;
  room = null;
  window.clearInterval(statusTimer);
  window.clearInterval(levelTimer);
  if (body.dataset.callState !== "error") setState("ended", agentLeft ? "the agent left the call" : undefined);
  if (ended !== null) {
    await fetch(`/api/calls/${encodeURIComponent(ended.room)}/hangup`, { method: "POST" }).catch(() => undefined);
  }
  if (ending !== null) await ending.disconnect();
  $("audio").replaceChildren();
  $("start-audio").hidden = true;
  void audioContext?.close();
  audioContext = null;
}

async function main(): Promise<void> {
  $("hangup").addEventListener("click", () => void endCall(false));
  $("start-audio").addEventListener("click", () => void startAudio());
  let agents: AgentRow[];
  try {
    agents = await loadAgents();
  } catch (err) {
    $("agents-note").textContent = String(err);
    setState("error", String(err));
    return;
  }
  showAgents(agents);
  const wanted = new URLSearchParams(window.location.search).get("agent");
  if (wanted !== null) {
    const agent = agents.find((a) => a.id === wanted);
    if (agent === undefined) fail(`no agent ${wanted}`);
    else void startCall(agent.id, agent.name);
  }
}

void main();
