// A port of what two consumers of tunasync's /jobs do with it, run by node against a live master:
// mirror-web's list processing (as on its index page) and mirrorz-parser's tunasync.js with
// mirrorz's statusMapper. Reads the /jobs URL from argv[2]; prints one JSON object.
"use strict";

// mirror-web: disabled jobs are hidden; a coloured label for the states it knows; "Last Attempt"
// when the last run ended after the last success; sizes and times shown as given.
const LABELS = { success: "label-success", syncing: "label-info", failed: "label-warning", paused: "label-warning" };

function mirrorWeb(jobs) {
  return jobs
    .filter((job) => job.status !== "disabled")
    .map((job) => ({
      name: job.name,
      label: LABELS[job.status] || "",
      show_status: job.status,
      last_update: job.last_update_ts > 0 ? new Date(job.last_update_ts * 1000).toISOString() : "",
      last_attempt: job.status === "failed" && job.last_ended_ts !== job.last_update_ts
        ? new Date(job.last_ended_ts * 1000).toISOString() : null,
      size: job.size,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

// mirrorz: statusMapper on the job status, the main token's time, O while syncing or failed, X next.
function statusMapper(status) {
  return { success: "S", syncing: "Y", failed: "F", paused: "P" }[status] || "U";
}

function mirrorzStatus(job) {
  const letter = statusMapper(job.status);
  let token = letter;
  if (letter === "S") token += job.last_update_ts;
  else if (letter === "Y") token += job.last_started_ts;
  else if (letter === "F") token += job.last_ended_ts;
  if ((letter === "Y" || letter === "F") && job.last_update_ts > 0) token += "O" + job.last_update_ts;
  if (job.next_schedule_ts > 0) token += "X" + job.next_schedule_ts;
  return token;
}

async function main() {
  const response = await fetch(process.argv[2]);
  if (!response.ok) throw new Error(`GET ${process.argv[2]}: HTTP ${response.status}`);
  const jobs = await response.json();
  const mirrorz = {};
  for (const job of jobs) mirrorz[job.name] = { status: mirrorzStatus(job), size: job.size };
  process.stdout.write(JSON.stringify({ mirror_web: mirrorWeb(jobs), mirrorz }));
}

main().catch((error) => { process.stderr.write(String(error) + "\n"); process.exit(1); });
