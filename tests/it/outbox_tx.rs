//! The transactional outbox of verifications (issue 9 item 4): creating a verification cancels
//! the subject's pending one and queues its SMS in one atomic operation, so a queueing that
//! fails (memory: the queue is full; Redis: the store is cut) leaves the previous verification
//! pending and usable, and queues nothing.

use std::sync::Arc;
use std::time::Duration;

use otpgate::clock::Clock;
use otpgate::config::Config;
use otpgate::otp::codes::CodeDeriver;
use otpgate::otp::{Error, NewVerification, Verifications};
use otpgate::outbox::{Composer, Outbox, Routing, memory::MemoryOutbox};
use otpgate::purpose::Purpose;
use otpgate::store::{Status, Stores};

use crate::util::*;

fn service(config: &Config, stores: &Stores, outbox: &Outbox) -> Verifications {
    let status = otpgate::smpp::SmscStatus::new("sim");
    Verifications {
        stores: stores.clone(),
        composer: Arc::new(Composer {
            codes: CodeDeriver::new([9; 32]),
            templates: otpgate::sms::Templates::load("One Account", "", None).unwrap(),
            activation: None,
        }),
        otp: config.otp.clone(),
        default_locale: otpgate::sms::Locale::En,
        outbox: outbox.clone(),
        routing: Arc::new(Routing::new(&config.smpp.smsc, &[status])),
        limits: Arc::new(otpgate::limits::Limiter::new(&config.limits)),
    }
}

fn req(phones: &otpgate::phone::PhonePolicy) -> NewVerification {
    NewVerification {
        purpose: Purpose::Registration,
        account_id: None,
        phone: Some(phones.parse("+85366120061").unwrap()),
        locale: None,
        ip: None,
    }
}

/// The code of the next job of `outbox`, as a session would render it; fails when none comes.
async fn next_code(outbox: &Outbox, svc: &Verifications) -> String {
    let mut consumer = outbox.consumer(&[String::new()], "sim", 0, svc.routing.clone(), 8);
    let job = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a job");
    extract_code(&svc.composer.render(&job.body).expect("renders"))
}

fn config(b: Backend) -> Config {
    Config::from_toml(
        &config_toml(b, "127.0.0.1:9", ""),
        std::path::Path::new("t.toml"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_full_queue_leaves_the_previous_code_usable() {
    let config = config(Backend::Memory);
    let stores = Stores::memory(Arc::new(otpgate::store::memory::MemoryStore::new()));
    let outbox = Outbox::Memory(Arc::new(MemoryOutbox::new(1)));
    let svc = service(&config, &stores, &outbox);
    let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
    let now = otpgate::clock::system_now_ms();
    let first = svc
        .create("client-a", req(&phones), now)
        .await
        .expect("first");
    // The queue holds the first SMS: a second verification cannot be queued.
    let err = svc
        .create("client-a", req(&phones), now + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueFull), "{err:?}");
    let (v, _) = svc
        .get("client-a", &first.id)
        .await
        .expect("first still there");
    assert_eq!(
        v.status,
        Status::Pending,
        "the previous verification was not canceled"
    );
    assert_eq!(outbox.depth().await, [1, 0], "nothing more was queued");
    let code = next_code(&outbox, &svc).await;
    svc.check("client-a", &Purpose::ALL, &first.id, &code, now + 2)
        .await
        .expect("the previous code approves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_cut_store_leaves_the_previous_code_usable() {
    require_redis().await;
    let config = config(Backend::Redis);
    let prefix = &config.store.key_prefix;
    let proxy = Proxy::start(redis_addr()).await;
    let store =
        otpgate::store::redis::RedisStore::connect(&format!("redis://{}", proxy.addr), &[], prefix)
            .await
            .unwrap();
    let stores = Stores::redis(store);
    let outbox = Outbox::Redis(
        otpgate::outbox::redis::RedisOutbox::new(
            &redis_url(),
            prefix,
            &[String::new()],
            Clock::system(),
        )
        .unwrap(),
    );
    let svc = service(&config, &stores, &outbox);
    let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
    let now = otpgate::clock::system_now_ms();
    let first = svc
        .create("client-a", req(&phones), now)
        .await
        .expect("first");
    assert_eq!(
        outbox.depth().await,
        [1, 0],
        "the entry is written by the create script"
    );

    proxy.down();
    let err = svc
        .create("client-a", req(&phones), now + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Store(_)),
        "store down, not queue full: {err:?}"
    );
    proxy.up();

    let mut v = None;
    for _ in 0..100 {
        if let Ok(got) = svc.get("client-a", &first.id).await {
            v = Some(got.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = v.expect("the store answers again");
    assert_eq!(
        v.status,
        Status::Pending,
        "the previous verification was not canceled"
    );
    assert_eq!(outbox.depth().await, [1, 0], "nothing more was queued");
    // The entry is the one the outbox reads (fields v, k, j): it renders the first code.
    let code = next_code(&outbox, &svc).await;
    svc.check("client-a", &Purpose::ALL, &first.id, &code, now + 2)
        .await
        .expect("the previous code approves");
}

/// The queueing itself fails inside the script (the stream key holds a string: `XADD` answers
/// WRONGTYPE): nothing of the create is written, the previous code stays pending and usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_failed_xadd_writes_nothing() {
    require_redis().await;
    let config = config(Backend::Redis);
    let prefix = &config.store.key_prefix;
    let store = otpgate::store::redis::RedisStore::connect(&redis_url(), &[], prefix)
        .await
        .unwrap();
    let stores = Stores::redis(store);
    let outbox = Outbox::Redis(
        otpgate::outbox::redis::RedisOutbox::new(
            &redis_url(),
            prefix,
            &[String::new()],
            Clock::system(),
        )
        .unwrap(),
    );
    let svc = service(&config, &stores, &outbox);
    let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
    let now = otpgate::clock::system_now_ms();
    let first = svc
        .create("client-a", req(&phones), now)
        .await
        .expect("first");
    let code = next_code(&outbox, &svc).await;

    let stream =
        otpgate::store::keys::Keys::new(prefix).outbox_stream("", otpgate::outbox::Priority::Code);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = svc
        .create("client-a", req(&phones), now + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();

    let (v, _) = svc
        .get("client-a", &first.id)
        .await
        .expect("first still there");
    assert_eq!(
        v.status,
        Status::Pending,
        "the previous verification was not canceled"
    );
    svc.check("client-a", &Purpose::ALL, &first.id, &code, now + 2)
        .await
        .expect("the previous code approves");
}
