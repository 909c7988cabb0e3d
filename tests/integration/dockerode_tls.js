// dockerode over the gateway's TLS address, with DOCKER_HOST, DOCKER_TLS_VERIFY and
// DOCKER_CERT_PATH only (it sends no headers): run a container, list it, remove it.
// Prints one JSON line; tests/integration/test_tls.py checks it.
const Docker = require("dockerode");

async function main() {
  const docker = new Docker(); // reads DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
  const name = process.env.CONTAINER_NAME;
  await docker.ping();
  const container = await docker.createContainer({
    Image: "busybox",
    Cmd: ["echo", "from-dockerode"],
    name,
    Tty: true,
  });
  await container.start();
  await container.wait();
  const logs = await container.logs({ stdout: true, stderr: true });
  const listed = (await docker.listContainers({ all: true })).some((c) => c.Names.includes("/" + name));
  await container.remove({ force: true });
  const after = (await docker.listContainers({ all: true })).some((c) => c.Names.includes("/" + name));
  const output = Buffer.isBuffer(logs) ? logs.toString() : String(logs);
  console.log(JSON.stringify({ output: output.replace(/\r\n/g, "\n"), listed, listed_after_remove: after }));
}

main().catch((err) => {
  console.error(String((err && err.stack) || err));
  process.exit(1);
});
