// Validates KEDA resources (JSON lines on stdin) against KEDA's CRD schemas, as generated
// into @kubernetes-models/keda. Prints one line per resource: "ok <kind>/<name>" or the errors.
const { ScaledObject, TriggerAuthentication, ScaledJob, ClusterTriggerAuthentication } = require("@kubernetes-models/keda/keda.sh/v1alpha1");

const kinds = { ScaledObject, TriggerAuthentication, ScaledJob, ClusterTriggerAuthentication };
let failed = false;
const input = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const line of input) {
  const doc = JSON.parse(line);
  const name = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
  const Kind = kinds[doc.kind];
  if (!Kind) {
    console.log(`error ${name}: not a KEDA kind`);
    failed = true;
    continue;
  }
  try {
    new Kind(doc).validate();
    console.log(`ok ${name}`);
  } catch (error) {
    console.log(`error ${name}: ${error.message.replace(/\n/g, " ")}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
