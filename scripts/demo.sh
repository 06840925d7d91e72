#!/usr/bin/env bash
# README's main command. Sets up .venv if needed, then runs the whole CameNN TFX pipeline on the embedded
# sample (profile `small`): Beam preprocessing, data validation, Transform, training, TFMA evaluation and,
# for a blessed model, the push to outputs/serving_model/camenn/<version>/, and beside it the retrieval model
# (outputs/serving_model/camenn_retrieval/<version>/). Then serves both with `camenn serve` on a free local
# port, ranks listings for a shopper (one gRPC Predict), and recommends listings to them: retrieval over
# every listing, then ranking (two Predicts). Everything goes under outputs/. Extra arguments go to `camenn pipeline run`
# (e.g. --profile tiny, --set epochs=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
camenn="$root/.venv/bin/camenn"
python="$root/.venv/bin/python"
serving_base="$root/outputs/serving_model"

"$camenn" pipeline run "$@"

if ! ls "$serving_base"/camenn/*/saved_model.pb >/dev/null 2>&1; then
  echo "demo: no model has been pushed yet (none was blessed), so there is nothing to serve"
  exit 0
fi

# A shopper of the sample and eight candidates: three listings they clicked and five others, all among
# the listings the pushed version holds (its listing table).
read -r shopper items < <("$python" - "$root/data/sample/events.csv" "$serving_base/camenn" <<'EOF'
import collections, csv, random, sys
import tensorflow as tf
from camenn.model import features as F
from camenn.serving import listings, servables
versions = servables.version_directories(sys.argv[2])
known = {i.decode() for i in listings.read_table(tf.saved_model.load(versions[max(versions)]))["item_ids"]}
events = list(csv.DictReader(open(sys.argv[1], newline="")))
clicks = collections.Counter(e[F.SHOPPER_ID] for e in events if e[F.ITEM_ID] in known)
shopper = clicks.most_common(1)[0][0]
theirs = sorted({e[F.ITEM_ID] for e in events if e[F.SHOPPER_ID] == shopper and e[F.ITEM_ID] in known})
rng = random.Random(0)
others = rng.sample(sorted(known - set(theirs)), 5)
print(shopper, ",".join(rng.sample(theirs, min(3, len(theirs))) + others))
EOF
)

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$root/outputs/demo_serve.log"
if [ -f "$serving_base/local_models.config" ] && ls "$serving_base"/camenn_retrieval/*/saved_model.pb >/dev/null 2>&1; then
  serve_models=(--model_config_file "$serving_base/local_models.config")  # the ranker and the retrieval model
else
  serve_models=(--model_base_path "$serving_base/camenn")
fi
"$camenn" serve "${serve_models[@]}" --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
echo
echo "serving ${serve_models[*]} on 127.0.0.1:$port (log: $log); waiting for the newest versions to load"
models=camenn
[ "${serve_models[0]}" = --model_config_file ] && models="camenn camenn_retrieval"
"$python" - "$port" $models <<'EOF'
import sys, time
import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}"))
deadline = time.time() + 300
for name in sys.argv[2:]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    while True:
        try:
            statuses = stub.GetModelStatus(request, timeout=5).model_version_status
            if any(s.state == s.AVAILABLE for s in statuses):
                break
        except grpc.RpcError:
            pass
        if time.time() > deadline:
            sys.exit(f"demo: the server did not load {name} within 5 minutes")
        time.sleep(1)
EOF
echo "ranking for shopper $shopper (one gRPC Predict through camenn rank):"
"$camenn" rank --user "$shopper" --items "$items" --hour 18 --port "$port"
if [ "$models" != camenn ]; then
  echo
  echo "recommendations for shopper $shopper (retrieval over every listing, then ranking: camenn recommend):"
  "$camenn" recommend --user "$shopper" --k 10 --hour 18 --port "$port"
fi
echo
echo "TensorBoard: .venv/bin/tensorboard --logdir outputs/pipelines/camenn/Trainer/model_run"
