fn main() {
    afl::fuzz!(|data: &[u8]| trustmesh_fuzz::h1_hyper_response(data));
}
