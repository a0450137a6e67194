/**
 * Test helper: a real nginx on 127.0.0.1 serving a temp folder with Range
 * support, started from a generated config (no root paths, no daemon) and
 * stopped by the handle it returns. nginx is not installed by tests: when it
 * is missing this throws with the apt command (`.ci/run` installs it).
 *
 * @module
 */

/** A running nginx. */
export interface Nginx {
  /** `http://127.0.0.1:PORT/`. */
  readonly baseUrl: string;
  /** Folder served at `/`. */
  readonly root: string;
  /** Stop nginx and remove its temp folder. */
  stop(): Promise<void>;
}

const CANDIDATES = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/** Path of the nginx binary, or null. */
export function findNginx(): string | null {
  for (const p of CANDIDATES) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* try the next one */ }
  }
  return null;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Options of `startNginx`. */
export interface NginxOptions {
  /**
   * `sendfile on` (default false, nginx's built-in default; Debian's shipped
   * nginx.conf turns it on): bodies go from the page cache to the socket in
   * the kernel instead of through nginx's 32 KiB output buffers.
   */
  readonly sendfile?: boolean;
}

/** Start nginx serving `files` (name → bytes). */
export async function startNginx(
  files: Record<string, Uint8Array>,
  opts: NginxOptions = {},
): Promise<Nginx> {
  const bin = findNginx();
  if (!bin) {
    throw new Error(
      "nginx is not installed: the HTTP streaming tests need Debian's nginx (apt-get install -y nginx); .ci/run installs it",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "moe-edge-nginx-" });
  const root = `${dir}/www`;
  await Deno.mkdir(root);
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${root}/${name}`, bytes);
  // as root, nginx workers run as 'nobody': let them read the served files
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(root, 0o755);
  for (const name of Object.keys(files)) await Deno.chmod(`${root}/${name}`, 0o644);
  let lastErr = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = freePort();
    const conf = `${dir}/nginx.conf`;
    await Deno.writeTextFile(
      conf,
      `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type application/octet-stream;
  keepalive_requests 10000;
  sendfile ${opts.sendfile ? "on" : "off"};
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { }
  }
}
`,
    );
    const child = new Deno.Command(bin, {
      args: ["-p", dir, "-c", conf, "-e", `${dir}/error.log`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const baseUrl = `http://127.0.0.1:${port}/`;
    const exited = child.status.then(() => true);
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      if (await Promise.race([exited, new Promise<false>((r) => setTimeout(() => r(false), 50))])) {
        break;
      }
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        up = true;
      } catch { /* not listening yet */ }
    }
    if (up) {
      const stderr = child.stderr;
      return {
        baseUrl,
        root,
        async stop(): Promise<void> {
          try {
            child.kill("SIGTERM");
          } catch { /* already gone */ }
          await child.status;
          await stderr.cancel();
          await Deno.remove(dir, { recursive: true });
        },
      };
    }
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    lastErr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    try {
      lastErr += await Deno.readTextFile(`${dir}/error.log`);
    } catch { /* no log */ }
  }
  await Deno.remove(dir, { recursive: true });
  throw new Error(`nginx did not start: ${lastErr}`);
}
