"""Scale-out for `adafv serve`: N replicas of a bundle on a Ray cluster, behind the same OpenAI-compatible front end.

    adafv serve BUNDLE --replicas N [--ray-address ADDR]

The front end (adafv.serve.app: validation, API key, bounded queue, SSE, metrics, loopback) stays one process; the
model runs in N Ray Serve replicas, each its own process with its own Pipeline (one per GPU: a cuda bundle's replica
asks Ray for one GPU), and Ray's router spreads requests over them, one request per replica at a time. Without
`--ray-address` a local Ray cluster is started for the server's lifetime; with one (`ray start --head` on a GPU
node, the others joined), replicas go wherever the cluster has room and the bundle must be at the same path on
every node.

Why Ray Serve rather than Triton (nvidia-pytriton), both tried on this machine (numbers in the README): Ray gives each
replica its own process, streams a Python generator back token by token, and installs beside numpy 2 and ONNX Runtime
1.32; PyTriton's wheel pins numpy < 2, runs its Python models' instances as threads of one process, and streams only
through Triton's own `generate_stream` protocol, so the OpenAI front end would have had to translate it anyway.
Ray's cost: ~0.5 GB of its own processes, ~8 s to start, and its internal ports listen on every interface (only our
front end is confined to loopback): run it on a trusted network; Ray's token authentication is left on.

Ray is imported only here, only when `--replicas` is given (`pip install 'adafv[cluster]'`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from adafv.errors import ConfigError

from .backend import LocalBackend, run_pipeline, stream_in_thread

APP_NAME = "adafv"


class Replica(LocalBackend):
    """One model instance in its own Ray process: the in-process backend over its own Pipeline, one request at a
    time (the router sends no more, and one worker thread runs them, so a cancelled generation's last step finishes
    before the next request starts); each result names the replica."""

    def __init__(self, bundle: str):
        from adafv.runtime import Pipeline

        super().__init__(Pipeline.load(bundle, warmup=True))
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def _run(self, request: dict, on_token=None) -> dict:
        return {**run_pipeline(self.pipe, request, on_token), "replica": self.name}

    async def answer(self, request: dict) -> dict:
        return await asyncio.get_running_loop().run_in_executor(self.worker, self._run, request)

    async def stream(self, request: dict):
        """Pieces of text, then the result dict; cancelled by Ray when the front end's client goes away."""
        async for item in stream_in_thread(self.worker, self._run, request):
            yield item


class RayBackend:
    """The front end's view of the replicas: the same `answer` / `stream` / `describe` / `close` as LocalBackend."""

    def __init__(self, bundle: str, replicas: int, address: str | None = None, gpu: bool = False):
        try:
            import ray
            from ray import serve
        except ImportError:
            raise ConfigError("--replicas runs on Ray Serve, which this environment lacks: pip install "
                              "'adafv[cluster]'") from None  # fmt: skip
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        self.replicas, self.started_ray, self.deployed = replicas, not address, False
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:  # a local cluster for this server's lifetime: enough logical CPUs for one per replica
                ray.init(num_cpus=max(os.cpu_count() or 1, replicas), include_dashboard=False, **quiet)
        except Exception as e:  # ConnectionError, OSError (a socket path over 107 bytes), RuntimeError ...
            where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise ConfigError(f"could not {where}: {message}") from None
        try:
            need = "GPU" if gpu else "CPU"
            have = ray.cluster_resources().get(need, 0)
            if have < replicas:
                raise ConfigError(f"{replicas} replicas need {replicas} {need}s; the Ray cluster has {have:g}")
            serve.start(proxy_location="Disabled")  # no Ray HTTP proxy: our front end is the only way in
            deployment = serve.deployment(
                Replica,
                name="replica",
                num_replicas=replicas,
                max_ongoing_requests=1,
                ray_actor_options={"num_gpus": 1} if gpu else {"num_cpus": 1},
            )
            self.deployed = True  # from here on there is something to remove
            self.handle = serve.run(deployment.bind(str(bundle)), name=APP_NAME, route_prefix=None)
            self.streams = self.handle.options(stream=True)
        except BaseException:
            self.close()
            raise

    async def answer(self, request: dict) -> dict:
        return await self.handle.answer.remote(request)

    async def stream(self, request: dict):
        response = self.streams.stream.remote(request)
        try:
            async for item in response:
                yield item
        finally:
            response.cancel()  # the client went away, or the answer is complete: nothing to stop then

    def describe(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "backend": "ray"}

    def close(self) -> None:
        import ray
        from ray import serve

        try:
            if self.started_ray:
                serve.shutdown()
            elif self.deployed:  # on a cluster we joined: remove only our application
                serve.delete(APP_NAME)
        finally:
            if self.started_ray:
                ray.shutdown()
