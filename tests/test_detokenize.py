from hypothesis import given
from hypothesis import strategies as st

from glm_client.detokenize import IncrementalDecoder, StopStrings


def byte_decode(ids: list[int]) -> str:
    # Ids are raw UTF-8 bytes: a multi-byte character spans several ids, like byte-fallback tokenizers.
    return bytes(ids).decode("utf-8", errors="replace")


@given(st.text())
def test_incremental_decoding_reassembles_any_text(text):
    decoder = IncrementalDecoder(byte_decode)
    pieces = [decoder.push(b) for b in text.encode("utf-8")]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces[:-1]) or "\ufffd" in text


def test_stop_string_split_across_deltas_is_never_shown():
    stops = StopStrings(["<END>"])
    shown = [stops.feed(part) for part in ["Hello <", "EN", "D> ignored", " more"]]
    assert "".join(shown) + stops.flush() == "Hello "
    assert stops.stopped


def test_text_that_only_looks_like_a_stop_start_is_released():
    stops = StopStrings(["<END>"])
    shown = stops.feed("a <E") + stops.feed("xtra")
    assert shown + stops.flush() == "a <Extra"
    assert not stops.stopped


@given(st.text(), st.lists(st.integers(min_value=1, max_value=5)))
def test_stop_strings_cut_at_the_first_stop_for_any_chunking(text, cuts):
    full = text + "STOP" + "tail"
    stops = StopStrings(["STOP"])
    out, position = [], 0
    for cut in [*cuts, len(full)]:
        out.append(stops.feed(full[position : position + cut]))
        position += cut
    out.append(stops.feed(full[position:]))
    out.append(stops.flush())
    assert "".join(out) == full[: full.find("STOP")]
