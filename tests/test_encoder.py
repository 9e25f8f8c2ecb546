"""The padded BiLSTM equals nn.LSTM over pack_padded_sequence (docs/model.md, "Encoder"), outputs and gradients."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modeling_msmn.convert_authors_checkpoint import bidirectional_lstm_key_map
from modeling_msmn.modeling_msmn import MSMNBiLSTM


@pytest.mark.parametrize("num_layers", [1, 2])
def test_matches_packed_lstm(num_layers):
    torch.manual_seed(num_layers)
    input_size, hidden_size, lengths = 5, 4, torch.tensor([7, 3, 1, 5, 7])
    packed_lstm = nn.LSTM(input_size, hidden_size, num_layers, bidirectional=True, batch_first=True).double()
    ours = MSMNBiLSTM(input_size, hidden_size, num_layers, dropout=0.0).double()
    mapping = bidirectional_lstm_key_map("", "", num_layers)
    ours.load_state_dict({mapping[name]: value for name, value in packed_lstm.state_dict().items()})

    inputs = torch.randn(len(lengths), int(lengths.max()), input_size, dtype=torch.float64)
    inputs_ours = inputs.clone().requires_grad_()
    inputs_packed = inputs.clone().requires_grad_()
    packed = pack_padded_sequence(inputs_packed, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(packed_lstm(packed)[0], batch_first=True)
    actual = ours(inputs_ours, lengths)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)

    weights = torch.randn_like(expected)
    (expected * weights).sum().backward()
    (actual * weights).sum().backward()
    torch.testing.assert_close(inputs_ours.grad, inputs_packed.grad, rtol=0, atol=1e-12)
    for name, parameter in packed_lstm.named_parameters():
        torch.testing.assert_close(ours.get_parameter(mapping[name]).grad, parameter.grad, rtol=0, atol=1e-12)


def test_padding_outputs_zero_and_padding_values_ignored():
    torch.manual_seed(0)
    lstm = MSMNBiLSTM(3, 2, 2, dropout=0.0)
    inputs = torch.randn(2, 6, 3)
    noisy = inputs.clone()
    noisy[0, 4:] = 100.0  # whatever sits in padding must not leak into real positions
    lengths = torch.tensor([4, 6])
    clean_out, noisy_out = lstm(inputs, lengths), lstm(noisy, lengths)
    assert torch.all(noisy_out[0, 4:] == 0)
    torch.testing.assert_close(clean_out, noisy_out)
