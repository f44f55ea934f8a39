def test_show(exercised):
    for k, v in sorted(exercised.items()):
        print(k, sorted(v))
