"""dlaasd.buckets: which names S3 accepts, and the fixed rule for the others."""

from __future__ import annotations

import random
import string

import pytest

from dlaasd import buckets
from dlaasd.buckets import problem, store_name


@pytest.mark.parametrize(
    "name",
    ["tf-training-data", "abc", "a" * 63, "my.data.2024", "2024", "x-1.y-2", "a--b"],
)
def test_valid_names_are_kept(name):
    assert problem(name) is None
    assert store_name(name) == name
    assert buckets.mapped(name) is None


@pytest.mark.parametrize(
    "name, stored",
    [
        ("tf_training_data", "tf-training-data"),  # FfDL's examples
        ("tf_trained_model", "tf-trained-model"),
        ("h2o3_training_data", "h2o3-training-data"),
        ("MyData", "mydata"),  # lowercased
        ("My Data!", "my-data"),  # a run of other characters is one '-', trimmed
        ("a__b", "a-b"),
        ("data..set", "data.set"),  # dots: one
        ("data.-set", "data.set"),  # '.-' and '-.' are refused: the dot stays
        ("data-.set", "data.set"),
        ("-abc-", "abc"),  # trimmed
        (".abc.", "abc"),
        ("192.168.0.1", "192-168-0-1"),  # not an IP address
        ("Results_2024", "results-2024"),
    ],
)
def test_the_rule(name, stored):
    assert problem(name) is not None
    assert store_name(name) == stored
    assert problem(stored) is None


def test_short_names_get_a_hash_of_the_name_as_written():
    assert store_name("a") == "a-ca978112"  # sha256("a") starts ca978112
    assert store_name("A") != store_name("a")  # "A" and "a" stay apart
    assert store_name("___") == "bda25155"  # nothing left: the hash alone


def test_long_names_are_cut_with_a_hash_that_keeps_them_apart():
    one, two = "x" * 70 + "_one", "x" * 70 + "_two"
    assert len(store_name(one)) == 63 and store_name(one).startswith("x" * 54 + "-")
    assert store_name(one) != store_name(two)
    assert problem(store_name("A" * 64)) is None


def test_a_cut_that_ends_in_a_dot_stays_valid():
    name = "a" * 53 + "." + "b" * 20  # the cut falls right after the dot
    assert problem(store_name(name)) is None


@pytest.mark.parametrize("seed", range(5))
def test_any_name_maps_to_a_valid_one_and_the_rule_is_stable(seed):
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._- /:@" + "äé"
    for _ in range(400):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 90)))
        stored = store_name(name)
        assert problem(stored) is None, (name, stored)
        assert store_name(stored) == stored  # a stored name maps to itself
        assert store_name(name) == stored  # the same every time: no state


@pytest.mark.parametrize(
    "name, words",
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("Ab_c", "lowercase"),
        ("a..b", "'..'"),
        ("a.-b", "'.-'"),
        ("10.0.0.1", "IP address"),
    ],
)
def test_problem_says_why(name, words):
    assert words in problem(name)


def test_the_note_names_both():
    note = buckets.mapped("tf_training_data")
    assert "'tf_training_data' is stored as 'tf-training-data'" in note
