"""Parse a Prometheus text exposition (stdin) with prometheus_client's parser; print JSON.

Output: a list of families {name, type, help, samples: [{name, labels, value}]}. Non-finite
values are written as strings ("+Inf", "-Inf", "NaN") so that the output is strict JSON.
Exits 1 with the parser's message when the text does not parse.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def value(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def main():
    text = sys.stdin.read()
    try:
        families = [
            {
                "name": f.name,
                "type": f.type,
                "help": f.documentation,
                "samples": [{"name": s.name, "labels": dict(s.labels), "value": value(s.value)} for s in f.samples],
            }
            for f in text_string_to_metric_families(text)
        ]
    except Exception as e:  # the parser raises ValueError (and others) on malformed input
        print(f"exposition does not parse: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(families, sys.stdout)


main()
