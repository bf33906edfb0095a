import { StoreUnavailableError } from "../domain/errors.js";

/** The controller was stopped (the server is shutting down): it takes no action any more. */
export class ControllerStoppedError extends StoreUnavailableError {
  constructor() {
    super("the rollout controller is stopped");
  }
}
