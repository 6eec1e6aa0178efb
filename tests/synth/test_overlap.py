from potstill.synth.overlap import Contamination, NearDuplicates, jaccard, ngrams, normalized, words

STORY = "Tom has 12 red apples in a basket. He buys 7 more apples at the market. How many now?"


def test_normalized_ignores_case_punctuation_and_spacing() -> None:
    assert normalized("  Tom has 12  apples!") == normalized("tom HAS 12 apples")
    assert normalized("Tom has 12 apples") != normalized("Tom has 13 apples")


def test_near_duplicates_are_found_by_exact_jaccard_and_unrelated_texts_are_not() -> None:
    index = NearDuplicates(threshold=0.7)
    index.add("a", STORY)
    index.add("b", "A train leaves the station at noon and travels for three hours to the coast.")
    close = STORY.replace("How many now?", "How many now??")  # same words
    assert index.match(close) == ("a", 1.0)
    edited = STORY.replace("market", "big market")
    found = index.match(edited)
    expected = jaccard(ngrams(words(edited), 3), ngrams(words(STORY), 3))
    assert found is not None and found[0] == "a" and abs(found[1] - expected) < 1e-9
    assert expected == 0.75
    assert (
        index.match("Sara reads 30 pages of a long novel every single evening before bed.") is None
    )


def test_near_duplicate_threshold_is_respected() -> None:
    index = NearDuplicates(threshold=0.8)
    index.add("a", STORY)
    assert index.match(STORY.replace("market", "big market")) is None  # 0.75


def test_contamination_is_the_share_of_ngrams_found_in_one_test_item() -> None:
    test = {"t1": STORY, "t2": "Ann has 3 cats and 2 dogs. How many pets does Ann have?"}
    check = Contamination(test, n=8, threshold=0.5)
    assert check.contaminated("Word for word: " + STORY) is not None
    assert check.overlap(STORY) == ("t1", 1.0)
    # Under 8 words, the whole text is looked for inside the test items.
    assert check.contaminated("Ann has 3 cats and 2 dogs.") == ("t2", 1.0)
    assert check.contaminated("Ann has 3 cats and 9 dogs.") is None
    # 13 words, 6 8-grams, 2 of them in t2
    assert check.overlap("Ann has 3 cats and 2 dogs. How many birds does Ann see?") == ("t2", 2 / 6)
    assert check.contaminated("Lee walks 4 miles to school and 4 miles back each day.") is None
