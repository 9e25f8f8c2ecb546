"""The Hugging Face Inference Endpoints handler of an MSMN checkpoint: the Hub serves a repository with
remote code through this file (`EndpointHandler`), which every checkpoint folder carries.

    handler = EndpointHandler("path/to/checkpoint")
    handler({"inputs": "Fever and productive cough ...", "parameters": {"top_k": 5}})
    → [[{"code": ..., "description": ..., "probability": ..., "synonym": ..., "evidence": [...]}, ...]]

`inputs` is a note or a list of notes; `parameters` are the icd-coding pipeline's options (top_k,
threshold, review_threshold, codes, candidates, operating_point, num_evidence, ...). The answer
holds one list of codes per note, in order.
"""

from transformers import pipeline


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.coder = pipeline("icd-coding", model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict) -> list[list[dict]]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('Send {"inputs": a note or a list of notes, "parameters": {...}}.')
        notes = data["inputs"]
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError('"parameters" must be an object of the icd-coding pipeline\'s options.')
        predictions = self.coder([notes] if isinstance(notes, str) else list(notes), **parameters)
        return predictions
