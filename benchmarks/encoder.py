"""Note encoder: our padded BiLSTM (packed semantics) vs nn.LSTM over pack_padded_sequence.

Forward+backward, fp32 on CPU, embedding 100 → BiLSTM 2×256 (the top-50 setting), mixed
lengths (N/2…N), each measurement in a fresh process. A run over `--timeout` seconds is reported
as such (pack_padded_sequence's CPU backward is quadratic in N; docs/model.md, "Encoder").

    python benchmarks/encoder.py [--tokens 500 1000 4000] [--batch-size 16]
"""

import argparse
import json
import os
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

from modeling_msmn.convert_authors_checkpoint import bidirectional_lstm_key_map  # noqa: E402
from modeling_msmn.modeling_msmn import MSMNBiLSTM  # noqa: E402


def run_one(implementation, batch_size, num_tokens):
    torch.manual_seed(0)
    packed_lstm = nn.LSTM(100, 256, 1, bidirectional=True, batch_first=True)
    ours = MSMNBiLSTM(100, 256, 1, dropout=0.0)
    mapping = bidirectional_lstm_key_map("", "", 1)
    ours.load_state_dict({mapping[name]: value for name, value in packed_lstm.state_dict().items()})
    inputs = torch.randn(batch_size, num_tokens, 100, requires_grad=True)
    lengths = torch.randint(num_tokens // 2, num_tokens + 1, (batch_size,))
    lengths[0] = num_tokens

    def step():
        if implementation == "packed":
            packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(packed_lstm(packed)[0], batch_first=True)
        else:
            states = ours(inputs, lengths)
        states.sum().backward()

    return measure(step)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[500, 1000, 4000])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        implementation, batch_size, num_tokens = args.one
        print(json.dumps(run_one(implementation, int(batch_size), int(num_tokens))))
        return

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU threads, fp32, B={args.batch_size}, forward+backward")
    print(f"{'N':>6} | {'packed s':>9}{'MiB':>8} | {'ours s':>8}{'MiB':>8} | {'speed×':>7}")
    for num_tokens in args.tokens:
        ours = in_subprocess(__file__, "--one", "ours", str(args.batch_size), str(num_tokens), timeout=args.timeout)
        packed = in_subprocess(__file__, "--one", "packed", str(args.batch_size), str(num_tokens), timeout=args.timeout)
        if "seconds" in packed:
            packed_text = f"{packed['seconds']:>9.2f}{packed['peak_mib']:>8.0f}"
            ratio = f"{packed['seconds'] / ours['seconds']:>7.1f}"
        else:
            packed_text, ratio = f"{'> ' + str(int(args.timeout)) + ' s':>17}", f"{'> ' + str(int(args.timeout / ours['seconds'])):>7}"
        print(f"{num_tokens:>6} | {packed_text} | {ours['seconds']:>8.2f}{ours['peak_mib']:>8.0f} | {ratio}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
