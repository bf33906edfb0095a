import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import type { Release } from "../../gen/autonomy/v1/releases_pb.js";
import type { Store } from "../store/store.js";

/**
 * The release each node should run, by node id (undefined: none). This is the one place
 * that decides it: today a node follows the latest release of its channel; staged rollouts
 * will decide it from the plans that include the node.
 */
export async function desiredReleases(store: Store, nodes: readonly Node[]): Promise<Map<string, Release | undefined>> {
  const latest = new Map<string, Promise<Release | undefined>>();
  const desired = new Map<string, Release | undefined>();
  for (const node of nodes) {
    let release = latest.get(node.channel);
    if (!release) latest.set(node.channel, (release = store.latestRelease(node.channel)));
    desired.set(node.nodeId, await release);
  }
  return desired;
}
