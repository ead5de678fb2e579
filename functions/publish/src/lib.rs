//! `publish`: publishing a claimed post to its platform. Not built yet (issue #5); every route
//! answers 501 with a JSON error naming the capability, so nothing pretends
//! to work.

use shared::{Error, response};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// What this component will do, named in its 501 answer.
const CAPABILITY: &str = "Publishing a claimed post to its platform";

#[http_component]
fn handle(_request: Request) -> Response {
    response::error(&Error::NotImplemented(format!(
        "{CAPABILITY} is not built yet (issue #5)"
    )))
}
