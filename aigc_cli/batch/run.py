"""Running one batch job through the core: the same `core.*.prepare` step, engine and writers as the single
`aigc text|image|speak` run, so that each result equals that run's. Used by the local runner (local.py) and
by the Ray worker (ray_runner.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..console import Console
from ..core.events import Reporter
from ..errors import failure_of
from ..pool import EnginePool
from .jobs import Job, error_result


class JobRunner:
    """Runs jobs on engines from one pool (loaded once per engine key); text jobs that may be batched go
    through the server's batcher (server/batching.py), so that greedy jobs running at once share batches."""

    def __init__(self, pool: EnginePool, out_dir: Path, console: Console | None = None) -> None:
        from ..server.batching import Batchers

        self.pool = pool
        self.out_dir = out_dir
        self.console = console or Console(quiet=True)
        self.batchers = Batchers(pool)

    def run(self, job: Job) -> dict[str, Any]:
        """The job's result line: the fields `--json` gives for its command, with id, task and status;
        or an error result with the message and the exit code a single run would give."""
        from ..core.models import model_errors

        if job.error is not None:
            return error_result(job, job.error)
        try:
            with model_errors(str(job.resolved.values.model)):
                fields = {"text": self._text, "image": self._image, "speech": self._speech}[job.task](job)
        except Exception as exc:
            return error_result(job, failure_of(exc, job.resolved.values.model))
        return {"id": job.id, "task": job.task, "status": "ok", **fields}

    def _reporter(self) -> Reporter:
        """Notices go to the batch's log console (its stderr lines), as a single run prints them."""
        return self.console.reporter(seeds=False)

    def _text(self, job: Job) -> dict[str, Any]:
        from ..core import text as core_text
        from ..core.events import Result

        prepared = core_text.prepare(job.resolved, job.prompt, self._reporter(), self.pool)
        with self.batchers.engine(prepared.key, prepared.request) as engine:
            (result,) = [e for e in core_text.run(prepared, engine) if isinstance(e, Result)]
        return result.record

    def _image(self, job: Job) -> dict[str, Any]:
        from ..core import image as core_image
        from ..core.events import Result
        from ..output import plan_file, save_image
        from ..streams import read_bytes

        plan = plan_file("image", job.out, self.out_dir)
        init, mask = job.init_image, job.mask
        inputs = core_image.ImageInputs(
            init=read_bytes(init, "'init_image'") if init is not None else None,
            init_name=Path(init).name if init is not None else None,
            init_what="'init_image'",
            mask=read_bytes(mask, "'mask'") if mask is not None else None,
            mask_name=Path(mask).name if mask is not None else None,
            mask_what="'mask'",
            fields=("'init_image'", "'mask'"),
        )
        prepared = core_image.prepare(job.resolved, job.prompt, self._reporter(), self.pool, inputs)
        with self.pool.lease(prepared.key) as engine:
            (result,) = [e for e in core_image.run(prepared, engine) if isinstance(e, Result)]
        path = save_image(result.payload, 0, result.record, plan, inputs.init)  # init: the parent
        return {"path": str(path), **result.record, **result.timings}

    def _speech(self, job: Job) -> dict[str, Any]:
        from ..core import speech as core_speech
        from ..core.events import Result
        from ..output import audio_json, encode_audio, plan_file, write_atomic

        plan = plan_file("audio", job.out, self.out_dir)
        prepared = core_speech.prepare(job.resolved, job.prompt, self._reporter(), self.pool)
        with self.pool.lease(prepared.key) as voice:
            (result,) = [e for e in core_speech.run(prepared, voice) if isinstance(e, Result)]
        rate = result.record["sample_rate"]
        path = plan.path(0, job.prompt, prepared.request.seed)
        assert path is not None
        write_atomic(path, encode_audio(result.payload, rate, plan.format, result.record))
        return audio_json(
            result.record, path, plan.format, result.timings["duration"], result.timings["compute"]
        )
