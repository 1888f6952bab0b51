"""Running one batch job through the core: the same `prepare_*` step, engine and writers as the single
`aigc text|image|speak` run, so that each result equals that run's. Used by the local runner (local.py) and
by the Ray worker (ray.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..console import Console
from ..errors import AigcError, GenerationError, map_exception
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
        from ..commands.common import model_errors

        if job.error is not None:
            return error_result(job, job.error)
        try:
            with model_errors(str(job.resolved.values.model)):
                fields = {"text": self._text, "image": self._image, "speech": self._speech}[job.task](job)
        except AigcError as exc:
            return error_result(job, exc)
        except Exception as exc:
            mapped = map_exception(exc, job.resolved.values.model)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return error_result(job, mapped or GenerationError(f"{type(exc).__name__}: {first}"))
        return {"id": job.id, "task": job.task, "status": "ok", **fields}

    def _text(self, job: Job) -> dict[str, Any]:
        from ..commands.common import pick_seed
        from ..commands.text import completion_record, prepare_text
        from ..engines.text import generate_text

        prepared = prepare_text(job.resolved, job.prompt, self.console, self.pool)
        request = replace(prepared.request, seed=pick_seed(job.resolved.values.seed, Console(quiet=True)))
        with self.batchers.engine(prepared.key, request) as engine:
            completion = generate_text(engine, request)
        return completion_record(completion, prepared, engine)

    def _image(self, job: Job) -> dict[str, Any]:
        from ..commands.image import prepare_image, read_mask, save_image
        from ..commands.image import read_init_image as read_init
        from ..output import plan_file

        s = job.resolved.values
        plan = plan_file("image", job.out, self.out_dir)
        init = job.init_image
        load_init = (lambda: read_init(init, s.width, s.height, "'init_image'")) if init is not None else None
        name = Path(init).name if init is not None else None
        mask = job.mask
        load_mask = (lambda image: read_mask(mask, image, "'mask'")) if mask is not None else None
        mask_name = Path(mask).name if mask is not None else None
        prepared = prepare_image(
            job.resolved, job.prompt, load_init, name, self.console, self.pool, load_mask, mask_name
        )
        with self.pool.lease(prepared.key) as engine:
            (result,) = list(engine.generate(prepared.request))
        record = {**prepared.record, "seed": result.seed}
        path = save_image(result.image, 0, record, plan)
        timings = {"seconds": result.seconds, "step_seconds": result.step_seconds}
        return {"path": str(path), **record, **timings, "decode_seconds": result.decode_seconds}

    def _speech(self, job: Job) -> dict[str, Any]:
        from ..commands.speak import audio_json, prepare_speech
        from ..engines.speech import synthesize_all
        from ..output import encode_audio, plan_file, write_atomic

        plan = plan_file("audio", job.out, self.out_dir)
        prepared = prepare_speech(job.resolved, job.prompt, self.console, self.pool)
        with self.pool.lease(prepared.key) as voice:
            samples, compute = synthesize_all(voice, prepared.request)
        rate = prepared.record["sample_rate"]
        path = plan.path(0, job.prompt, prepared.request.seed)
        assert path is not None
        write_atomic(path, encode_audio(samples, rate, plan.format, prepared.record))
        return audio_json(prepared.record, path, plan.format, len(samples) / rate, compute)
