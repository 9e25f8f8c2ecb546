"""Dynamic batching: the notes of requests that arrive together are coded in one pipeline call. A request
waits at most `max_wait` seconds for others (up to `max_batch` notes); requests with the same options share
a call. One worker thread runs the model, so the event loop keeps answering while it works."""

import asyncio
import json
import queue
import threading
import time
from dataclasses import dataclass


@dataclass
class Request:
    notes: list[str]
    options: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class DynamicBatcher:
    def __init__(self, coder, max_batch: int = 16, max_wait: float = 0.01):
        self.coder, self.max_batch, self.max_wait = coder, max_batch, max_wait
        self.requests = queue.Queue()
        threading.Thread(target=self.work, daemon=True, name="msmn-batcher").start()

    async def code(self, notes: list[str], options: dict) -> list[dict]:
        """Each note's `note_info` answer of the pipeline, in order; the pipeline's ValueError for bad options."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.requests.put(Request(notes, options, future, loop))
        return await future

    def work(self) -> None:
        while True:
            batch = self.gather(self.requests.get())
            groups = {}
            for request in batch:
                groups.setdefault(json.dumps(request.options, sort_keys=True), []).append(request)
            for requests in groups.values():
                self.run(requests)

    def gather(self, first: Request) -> list[Request]:
        """`first` and the requests that arrive within max_wait, up to max_batch notes."""
        batch, size, deadline = [first], len(first.notes), time.monotonic() + self.max_wait
        while size < self.max_batch and (left := deadline - time.monotonic()) > 0:
            try:
                request = self.requests.get(timeout=left)
            except queue.Empty:
                break
            batch.append(request)
            size += len(request.notes)
        return batch

    def run(self, requests: list[Request]) -> None:
        """One pipeline call for requests with the same options; on an error each is coded alone, so only
        the request at fault gets it (a bad option: the pipeline's ValueError)."""
        notes = [note for request in requests for note in request.notes]
        try:
            answers = self.coder(notes, batch_size=min(len(notes), self.max_batch), note_info=True, **requests[0].options)
        except Exception as error:  # noqa: BLE001 - the worker answers every error and keeps serving
            if len(requests) > 1:
                for request in requests:
                    self.run([request])
                return
            self.answer(requests[0], error=error)
            return
        for request in requests:
            self.answer(request, answers[: len(request.notes)])
            answers = answers[len(request.notes):]

    @staticmethod
    def answer(request: Request, result=None, error: Exception | None = None) -> None:
        def settle():
            if request.future.done():  # the client went away
                return
            request.future.set_exception(error) if error is not None else request.future.set_result(result)

        request.loop.call_soon_threadsafe(settle)
