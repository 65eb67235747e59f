"""Writes ecs_fields_<version>.json: the ECS fields our ECS output may use, from Elastic's own list.

    git clone https://github.com/elastic/ecs && git -C ecs checkout v9.4.0
    python3 tests/data/make_ecs_fields.py ecs/generated/ecs/ecs_flat.yml v9.4.0 $(git -C ecs rev-parse HEAD)

Needs PyYAML (not a dependency of the project: run it by hand when moving to a
newer ECS). Keeps every field of the field sets a network session event can
use (FIELD_SETS), each with what tests/ecs_schema.py checks a value against:
its type, whether ECS normalizes it to an array, and its pattern, allowed or
expected values where ECS gives them.
"""
import json
import sys

import yaml

FIELD_SETS = ("@timestamp", "message", "tags", "labels", "ecs", "event", "network", "source", "destination",
              "client", "server", "related", "observer", "host", "tls", "dns", "http", "url", "user_agent")


def main(path, tag, commit):
    flat = yaml.safe_load(open(path, encoding="utf-8"))
    fields = {}
    for name in sorted(flat):
        if name.split(".")[0] not in FIELD_SETS:
            continue
        f = flat[name]
        entry = {"type": f["type"], "array": "array" in (f.get("normalize") or [])}
        if f.get("pattern"):
            entry["pattern"] = f["pattern"]
        if f.get("allowed_values"):
            entry["allowed_values"] = [v["name"] for v in f["allowed_values"]]
        if f.get("expected_values"):
            entry["expected_values"] = list(f["expected_values"])
        fields[name] = entry
    version = tag.lstrip("v")
    doc = {"ecs_version": version,
           "source": f"https://github.com/elastic/ecs tag {tag} (commit {commit}) generated/ecs/ecs_flat.yml",
           "field_sets": list(FIELD_SETS), "fields": fields}
    head = {k: v for k, v in doc.items() if k != "fields"}
    lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "fields": {']
    lines += [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in fields.items()]
    lines[-1] = lines[-1].rstrip(",")
    with open(f"ecs_fields_{version}.json", "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n}}\n")         # one field a line: diffs show what a new ECS changed
    print(f"ecs_fields_{version}.json: {len(fields)} fields")


if __name__ == "__main__":
    main(*sys.argv[1:4])
